"""Console cold start: each page's first render in a fresh interpreter, ours vs the old behaviour.

    .venv/bin/python bench/page_render_bench.py [--reps 3] [--pages app.py pages/5_Costs.py]

A first render is what a user waits for after `streamlit run` (or a server restart): a new
interpreter imports Streamlit and the page's modules, then runs the page. Each run is therefore a
fresh subprocess, timed from its start to the end of `AppTest.run()`; this process launches
baseline and ours interleaved, page by page, and prints medians and the ratio.

Baseline emulates the code before the cold-start work, in the same tree:
  - building a ConversationDataset imports torch (it used to switch to torch's Dataset base then);
  - resolving a model's tokenizer family loads the tokenizer (tiktoken o200k, DeepSeek's), which
    the Costs page used to do just to know which cached token profile to read.
Both modes share one $CSFORGE_HOME, warmed first (label and token-profile caches built), as on a
console that has been used before.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "pages/1_Data.py", "pages/2_Factory.py", "pages/3_Sandbox.py", "pages/4_Scorecard.py",
         "pages/5_Costs.py"]
HEAVY = ("torch", "transformers", "peft", "sentence_transformers", "litellm", "tiktoken", "tokenizers")

CHILD = r"""
import sys, time
start = time.perf_counter()
mode, pages = sys.argv[1], sys.argv[2:]
if mode == "baseline":
    from core import dataset
    from core.prices import tokens

    init = dataset.ConversationDataset.__init__

    def old_init(self, *args, **kwargs):
        import torch.utils.data  # noqa: F401  (old: the base switched to torch's when a dataset was built)
        init(self, *args, **kwargs)

    dataset.ConversationDataset.__init__ = old_init
    resolve = tokens.tokenizer_for

    def old_tokenizer_for(model):
        name = resolve(model)
        tokens.counter(name)  # old: knowing the family meant loading its tokenizer
        return name

    for module in list(sys.modules.values()):
        if getattr(module, "tokenizer_for", None) is resolve:
            module.tokenizer_for = old_tokenizer_for
from streamlit.testing.v1 import AppTest
for page in pages:
    at = AppTest.from_file(page, default_timeout=300).run()
    if at.exception:
        sys.exit(f"{page}: {at.exception[0].message}")
elapsed = time.perf_counter() - start
print(elapsed, ",".join(m for m in HEAVY if m in sys.modules))
""".replace("HEAVY", repr(HEAVY))


def render(mode: str, pages: list[str], env: dict) -> tuple[float, str]:
    """Seconds from interpreter start (after Python's own start-up) to the end of the render."""
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, *[str(ROOT / p) for p in pages]], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} {pages}: {proc.stderr[-2000:]}")
    seconds, heavy = (proc.stdout.strip().splitlines()[-1].split(" ") + [""])[:2]
    return float(seconds), heavy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pages", nargs="*", default=PAGES)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CSFORGE_HOME": home, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        env.setdefault("CSFORGE_TORCH_THREADS", "1")
        t = time.perf_counter()
        render("ours", args.pages, env)  # warm the caches every page reads
        print(f"caches warmed in {time.perf_counter() - t:.1f} s; load average {os.getloadavg()[0]:.2f}")
        print(f"{'page':24} {'baseline s':>10} {'ours s':>8} {'ratio':>6}  heavy modules baseline / ours")
        for page in args.pages:
            runs: dict[str, list[float]] = {"baseline": [], "ours": []}
            heavy = {}
            for _ in range(args.reps):
                for mode in runs:  # interleaved, so a load spike hits both
                    seconds, heavy[mode] = render(mode, [page], env)
                    runs[mode].append(seconds)
            base, ours = statistics.median(runs["baseline"]), statistics.median(runs["ours"])
            print(f"{page:24} {base:10.2f} {ours:8.2f} {base / ours:5.2f}x  "
                  f"{heavy['baseline'] or '-'} / {heavy['ours'] or '-'}")
        print(f"load average at the end {os.getloadavg()[0]:.2f} (median of {args.reps} fresh processes each)")


if __name__ == "__main__":
    main()
