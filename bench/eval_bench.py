"""Eval runner throughput: 50 two-turn scenarios against a local OpenAI-compatible endpoint that
answers after 200 ms, run sequentially and with our concurrent runner (16), in one process.

    .venv/bin/python bench/eval_bench.py [--scenarios 50] [--delay 0.2] [--concurrency 16]

The endpoint (tests/fake_agents.py) runs in its own process, like a real model server, so its
work does not compete with the runner for this interpreter. The cache is off: every turn is a
real HTTP call through core.llm (LiteLLM). Target: ratio >= 8x at concurrency 16.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["CSFORGE_HOME"] = tempfile.mkdtemp(prefix="eval-bench-")
os.environ["CSFORGE_REGISTRY"] = str(Path(os.environ["CSFORGE_HOME"]) / "registry.yaml")  # empty registry


def bench_suite(n: int):
    from core.eval.suite import Suite

    return Suite.model_validate({"name": "bench", "language": "zh", "scenarios": [
        {"id": f"s{i:03d}", "category": "logistics_delay",
         "turns": [{"user": f"我的订单 {i} 什么时候发货？", "checks": [{"contains": ["已记录"]}]},
                   {"user": "好的，谢谢", "checks": [{"handoff": False}]}]} for i in range(n)]})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", type=int, default=50)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "tests.fake_agents", "--delay", str(args.delay)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        from core import llm
        from core.eval.runner import RunSettings, run

        llm.chat(url, [{"role": "user", "content": "warm-up"}])  # litellm import + first connection
        suite = bench_suite(args.scenarios)
        turns = sum(len(s.turns) for s in suite.scenarios)
        walls = {}
        for conc in (1, args.concurrency):
            settings = RunSettings(model=url, concurrency=conc, cache=False, timeout_s=30)
            start = time.perf_counter()
            result = run(settings, suite=suite)
            walls[conc] = time.perf_counter() - start
            s = result["summary"]
            print(f"concurrency {conc:>2}: {walls[conc]:6.2f} s  ({args.scenarios} scenarios, {turns} agent turns, "
                  f"pass rate {s['pass_rate']:.0%}, glitches {s['glitches']}, p50 {s['latency_p50_s']:.3f} s)")
        ideal = turns * args.delay
        print(f"sequential {walls[1]:.2f} s (calls alone: {ideal:.1f} s), concurrent({args.concurrency}) "
              f"{walls[args.concurrency]:.2f} s, ratio {walls[1] / walls[args.concurrency]:.1f}x (target >= 8x)")
    finally:
        server.terminate()
        server.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
