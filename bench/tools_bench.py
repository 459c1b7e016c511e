"""Tool environments and task runs: overhead per tool call and per task, concurrency, correctness.

    .venv/bin/python bench/tools_bench.py [--trials 4] [--concurrency 16] [--delay 0.2] [--quick]

Needs τ²-bench retail in ../shared/data/tau2_retail. Prints, in one process:
  1. per tool call: our copy-on-write state with a per-call journal vs the naive way (deep-copy
     the whole database before each call for rollback, compare it whole afterwards for the diff);
  2. per task outside model calls: 114 oracle tasks, simulator and agent answering at once
     (gold replay, tools, judging and the SQLite write included);
  3. 114 tasks x trials with a scripted agent and simulator that answer after `delay` seconds, at
     `concurrency`: wall time vs the ideal (calls / concurrency x delay);
  4. the oracle and the planted bad agents: tasks that depend on each failure, and how many were caught.
Targets: <= 5 ms per call, <= 50 ms per task, <= 10% over the ideal, oracle 114/114, every
dependent task caught.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("CSFORGE_HOME", tempfile.mkdtemp(prefix="tools_bench_"))

from core.eval import agents as ag  # noqa: E402
from core.eval import tasks as tk  # noqa: E402
from core.eval import tools as tl  # noqa: E402


def plans(env, tasks):
    return [(t, ag.oracle_plan(t, env)) for t in tasks]


def per_call(env, tasks) -> None:
    calls = [(t, a) for t, plan in plans(env, tasks) for a in plan]
    start = time.perf_counter()
    for task in tasks:
        session = env.session(task.initial_state)
        for a in [a for t, a in calls if t is task]:
            session.call(a.name, a.arguments)
    ours = (time.perf_counter() - start) / len(calls)
    sample = calls[:: max(1, len(calls) // 40)]
    start = time.perf_counter()
    for task, a in sample:  # naive: a deep copy for rollback and a whole-state compare per call
        state = copy.deepcopy(env.base)
        before = copy.deepcopy(state)
        tool_ = env.tools[a.name]
        try:
            tool_.fn(tl.State(state), **a.arguments)
        except Exception:
            state = before
        _ = state == before
    naive = (time.perf_counter() - start) / len(sample)
    print(f"1. per tool call ({len(calls)} calls): naive {1000 * naive:.1f} ms, ours {1000 * ours:.3f} ms "
          f"-> {naive / ours:.0f}x less; target <= 5 ms: {'ok' if ours <= 0.005 else 'MISSED'}")


def per_task(tasks) -> None:
    tk.run_tasks(tk.TaskSettings(model="@oracle", customer="tau_retail", concurrency=1), tasks=tasks[:5])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    out = tk.run_tasks(tk.TaskSettings(model="@oracle", customer="tau_retail", concurrency=1), tasks=tasks)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    each = wall / len(tasks)
    print(f"2. per task outside model calls ({len(tasks)} oracle tasks, sequential, SQLite included): "
          f"{1000 * each:.1f} ms wall, {1000 * cpu / len(tasks):.1f} ms CPU; passed {out['summary']['passed']}/"
          f"{len(tasks)}; target <= 50 ms: {'ok' if each <= 0.05 else 'MISSED'}")


class Delayed:
    """Wraps an agent or simulator so every answer takes `delay` seconds, like a model call."""

    calls = 0

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def __call__(self, *args):
        time.sleep(self.delay)
        Delayed.calls += 1
        turn = self.inner(*args)
        turn.latency_s = self.delay
        return turn


def concurrency(env, tasks, trials: int, workers: int, delay: float) -> None:
    Delayed.calls = 0
    settings = tk.TaskSettings(model="@oracle", customer="tau_retail", trials=trials, concurrency=workers)
    start = time.perf_counter()
    out = tk.run_tasks(settings, tasks=tasks,
                       agent_factory=lambda t, k: Delayed(ag.OracleAgent(t, env, ag.oracle_plan(t, env)), delay),
                       simulator_factory=lambda t, k: Delayed(ag.ScriptedSimulator(t), delay))
    wall = time.perf_counter() - start
    ideal = Delayed.calls / workers * delay
    over = wall / ideal - 1
    print(f"3. {len(tasks)} tasks x {trials} trials, {Delayed.calls} calls of {delay * 1000:.0f} ms at concurrency "
          f"{workers}: ideal {ideal:.1f} s, ours {wall:.1f} s ({100 * over:+.1f}%); pass^k {out['summary']['pass_hat']}; "
          f"target <= +10%: {'ok' if over <= 0.10 else 'MISSED'}")


def agents_table(env, tasks) -> None:
    print("4. reference agents on all tasks (dependent = tasks the planted failure applies to)")
    print(f"   {'agent':22} {'dependent':>9} {'caught':>6} {'other tasks passed':>18}  failing criteria")
    for kind in ("oracle", "skip_auth", "no_confirm", "wrong_variant", "other_user"):
        model = "@oracle" if kind == "oracle" else f"@bad:{kind}"
        out = tk.run_tasks(tk.TaskSettings(model=model, customer="tau_retail", concurrency=8), tasks=tasks, store=False)
        rows = {r["transcript"]["task"]: r for r in out["results"]}
        dependent = set() if kind == "oracle" else {t.id for t in tasks if ag.planted_plan(kind, t, env)}
        caught = sum(1 for tid in dependent if not rows[tid]["passed"])
        others = [tid for tid in rows if tid not in dependent]
        passed = sum(1 for tid in others if rows[tid]["passed"])
        print(f"   {model:22} {len(dependent):>9} {caught:>6} {passed:>11}/{len(others):<6}  "
              f"{out['summary']['failed_criteria']}")
    gold_failing = [t.id for t in tasks if tk.gold_state(env, t)[1]]
    print(f"   tasks whose gold replay has a failing write (state verdict inconclusive, as in τ²-bench): "
          f"{', '.join(gold_failing) or 'none'}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true", help="part 3 on 20 tasks x 2 trials")
    ap.add_argument("--skip-concurrency", action="store_true", help="parts 1, 2 and 4 only")
    args = ap.parse_args()
    try:
        env = tl.load_environment("tau_retail")
    except tl.EnvironmentMissing as exc:
        print(f"skipped: {exc}")
        return 0
    tasks = tk.load_tasks("tau_retail")
    per_call(env, tasks)
    per_task(tasks)
    agents_table(env, tasks)
    if args.skip_concurrency:
        return 0
    if args.quick:
        concurrency(env, tasks[:20], 2, args.concurrency, args.delay)
    else:
        concurrency(env, tasks, args.trials, args.concurrency, args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
