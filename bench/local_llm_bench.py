"""Local provider overhead and embedded-model load times, measured in one process.

    .venv/bin/python bench/local_llm_bench.py [--tokens 64] [--rounds 5]     # CSFORGE_TORCH_THREADS=1 on a busy box

1. tokens/s of `core.llm.chat("smollm2-135m", ...)` (resolve -> LiteLLM -> the `local`
   custom provider -> generate) against raw `model.generate` on the same loaded model,
   prompt and greedy settings; both produce the same tokens. Target ratio >= 0.9.
2. Load time of the embedded model: GGUF conversion (only when not converted yet), cold
   (first load in this process, imports included), warm (reload from the converted
   folder after dropping our cache; target <= 3 s), cached (what every later call pays).
Rounds alternate ours/raw so background load on the machine hits both alike; the best
round, the median round and CPU-time rates are printed (on a shared box, trust CPU time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = [{"role": "user", "content": "Explain in a few sentences how to return a pair of shoes "
                                      "that do not fit to an online shop."}]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def load_times() -> dict[str, float]:
    from core import local_provider as lp

    out: dict[str, float] = {}
    if not (lp.embedded_folder() / "config.json").exists():
        _, out["convert GGUF (first run only)"] = timed(lp.ensure_embedded)
    _, out["cold load (first in process, incl. imports)"] = timed(lp.load, lp.EMBEDDED_MODEL)
    lp.clear_cache()
    _, out["warm load (converted folder, imports done)"] = timed(lp.load, lp.EMBEDDED_MODEL)
    _, out["cached (every later call)"] = timed(lp.load, lp.EMBEDDED_MODEL)
    return out


def raw_generate(loaded, max_tokens: int) -> int:
    import torch

    enc = loaded.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=loaded.tokenizer.pad_token_id)
    return int(out.shape[1] - enc["input_ids"].shape[1])


def throughput(max_tokens: int, rounds: int) -> dict[str, tuple[float, float]]:
    """tokens/s (ours, raw): best round and median round, by wall clock and by this process's CPU time."""
    from core import llm, local_provider as lp

    loaded = lp.load(lp.EMBEDDED_MODEL)
    llm.chat(llm.EMBEDDED_MODEL, PROMPT, max_tokens=8)  # warm-up: litellm import, first kernels
    raw_generate(loaded, 8)
    wall: dict[str, list[float]] = {"ours": [], "raw": []}
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        done = llm.chat(llm.EMBEDDED_MODEL, PROMPT, max_tokens=max_tokens, timeout=600)
        assert done.ok, done.error
        wall["ours"].append(done.output_tokens / (time.perf_counter() - t))
        cpu["ours"].append(done.output_tokens / (time.process_time() - c))
        t, c = time.perf_counter(), time.process_time()
        n = raw_generate(loaded, max_tokens)
        assert n == done.output_tokens, (n, done.output_tokens)  # same work on both sides
        wall["raw"].append(n / (time.perf_counter() - t))
        cpu["raw"].append(n / (time.process_time() - c))
    return {"wall, best round": (max(wall["ours"]), max(wall["raw"])),
            "wall, median round": (statistics.median(wall["ours"]), statistics.median(wall["raw"])),
            "CPU time, median": (statistics.median(cpu["ours"]), statistics.median(cpu["raw"]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} (the bench shares the CPUs with whatever runs)")
    for what, seconds in load_times().items():
        print(f"{what:48s} {seconds:7.2f} s")
    import torch

    print(f"torch threads: {torch.get_num_threads()} (set CSFORGE_TORCH_THREADS to change)")
    print(f"{'tokens/s':22s} {'ours':>7s} {'raw':>7s} {'ratio':>6s}  (target ratio >= 0.9)")
    for how, (ours, raw) in throughput(args.tokens, args.rounds).items():
        print(f"{how:22s} {ours:7.1f} {raw:7.1f} {ours / raw:6.2f}")


if __name__ == "__main__":
    main()
