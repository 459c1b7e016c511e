"""Dataset benchmark: load + labels + stats of 100,000 conversations, ours vs a naive baseline.

    .venv/bin/python bench/dataset_bench.py [--n 100000]

Ours: ShopZhDataset streams the JSONL keeping byte offsets, computes each label and intervention
index once, then stats() builds one DataFrame. A second load hits the label cache.
Baseline (the original sketch): the whole file parsed into a list of dicts, and label and
intervention recomputed on every access, so labels and stats each pay for them again.
Targets on the 2-core machine: ours <= 10 s and <= 2 GiB peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data" / "shop_zh"))


def naive_pass(path: Path, rules) -> float:
    """Load everything, then compute labels and stats with per-access recomputation."""
    import pandas as pd

    from core.dataset import Conversation

    start = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]

    def item(i):  # the sketch's __getitem__: rules run on every access
        rec = records[i]
        conv = Conversation(rec["id"], rec["messages"], rec.get("context", {}), rec.get("meta", {}))
        return conv, rules.quality(conv), rules.intervention(conv)

    labels = [item(i)[1] for i in range(len(records))]
    rows = []
    for i in range(len(records)):
        conv, label, idx = item(i)
        rows.append({"turns": len(conv.messages), "chars": sum(len(m["content"]) for m in conv.messages),
                     "label": label, "intervention": idx})
    pd.DataFrame(rows)
    assert len(labels) == len(records)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="csforge-bench-"))
    os.environ["CSFORGE_HOME"] = str(tmp / "home")

    from generate import write

    from customers.shop_zh.dataset import ShopZhDataset

    path = tmp / "shop_zh_bench.jsonl"
    t = time.perf_counter()
    write(path, n=args.n, seed=1)
    print(f"generated {args.n:,} conversations ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")

    import pandas  # noqa: F401  imported before timing: the baseline pays neither import either
    import torch.utils.data  # noqa: F401  (core.dataset imports torch when the first dataset is built)

    t = time.perf_counter()
    ds = ShopZhDataset(path)
    stats = ds.stats()
    ours = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    t = time.perf_counter()
    warm = ShopZhDataset(path)
    warm.stats()
    cached = time.perf_counter() - t
    assert len(stats) == len(ds) == len(warm)

    baseline = naive_pass(path, ds)
    print(f"ours (cold: stream, label once, stats): {ours:6.2f} s   peak RSS {peak:.2f} GiB (process, incl. torch)")
    print(f"ours (warm: label cache hit)          : {cached:6.2f} s")
    print(f"naive baseline (recompute per access) : {baseline:6.2f} s")
    print(f"ratio baseline/ours: cold {baseline / ours:.2f}x, warm {baseline / cached:.1f}x")
    print(f"targets: ours <= 10 s -> {'met' if ours <= 10 else 'MISSED'}; peak <= 2 GiB -> {'met' if peak <= 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
