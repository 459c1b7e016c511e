"""`python -m core.eval run` for task scenarios (tools, simulated customer, pass^k).

    python -m core.eval run --customer tau_retail --model gemini/gemini-2.5-flash \
        --simulator gemini/gemini-2.5-flash --trials 4 --split test --concurrency 16
    python -m core.eval run --customer tau_retail --model @oracle           # 114/114 expected
    python -m core.eval run --customer shop_zh --model shop_zh-prompt --trials 2 --task zh-refund-in-window

The task path is taken when the customer has tasks and no scripted suite of its own, or when
--trials, --split or --task is given. Without --simulator the scripted simulator plays the
customer (good for reference agents, weak for real models: give a strong model).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from core.eval import tasks as tk


def wants_tasks(args) -> bool:
    from core.paths import CUSTOMERS_DIR

    if getattr(args, "resume", None):
        from core.eval import store as es

        old = es.get_run(args.resume)
        return bool(old) and (old["settings"] or {}).get("kind") == "tasks"
    if not tk.has_tasks(getattr(args, "customer", None)):
        return False
    own_suite = (CUSTOMERS_DIR / args.customer / "scenarios.yaml").exists()
    return not own_suite or any(getattr(args, k, None) for k in ("trials", "split", "task"))


def pass_text(summary: dict) -> str:
    hat = "  ".join(f"pass^{k} {'-' if v is None else f'{100 * v:.1f}%'}"
                    for k, v in summary.get("pass_hat", {}).items())
    probe = summary.get("tool_calling") or {}
    lines = [f"run {summary.get('run_id')}  model {summary.get('model')}  customer {summary.get('customer')}  "
             f"split {summary.get('split') or 'all'}"]
    if not probe.get("ok", True):
        lines.append(f"agent cannot call tools: {probe.get('reason')} (not scored; --force scores it anyway)")
    if summary.get("scenarios"):
        lines.append(f"{summary['tasks']} tasks x {summary['trials']} trials  {hat}  "
                     f"error rate {summary.get('error_rate')}  failed criteria {summary.get('failed_criteria')}")
    return "\n".join(lines)


def cmd_tools(args) -> int:
    """Print a client's tools as the agent receives them (schemas derived from tools.py)."""
    import json

    from core.eval import tools as tl

    try:
        env = tl.load_environment(args.customer)
    except (KeyError, tl.EnvironmentMissing) as exc:
        print(exc.args[0] if exc.args else exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(env.schemas, ensure_ascii=False, indent=1))
        return 0
    for t in env.tools.values():
        fn = t.schema["function"]
        params = ", ".join(f"{k}: {v.get('type', 'any')}" + ("" if k in fn["parameters"]["required"] else "?")
                           for k, v in fn["parameters"]["properties"].items())
        print(f"{t.kind:7} {t.name}({params})\n        {fn['description'].splitlines()[0]}")
    return 0


def cmd_run_tasks(args) -> int:
    if getattr(args, "resume", None):
        return _resume_tasks(args)
    try:
        settings = tk.TaskSettings(model=args.model, customer=args.customer, simulator=args.simulator,
                                   trials=args.trials or 1, split=args.split, tasks=args.task,
                                   concurrency=args.concurrency or 8, timeout_s=max(args.timeout, 1.0),
                                   max_tokens=args.max_tokens,
                                   force=args.force, judge=args.judge)
    except (ValueError, TypeError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.model:
        print("--model is required", file=sys.stderr)
        return 2
    return _play(args, settings, args.run_id, resume=False)


def _resume_tasks(args) -> int:
    """Finish an interrupted task run: its stored settings, only the (task, trial) pairs without a result."""
    import dataclasses

    from core.eval import store as es

    stored = es.get_run(args.resume)["settings"]
    fields = {f.name for f in dataclasses.fields(tk.TaskSettings)}
    settings = tk.TaskSettings(**{k: v for k, v in stored.items() if k in fields})
    if args.concurrency:
        settings.concurrency = args.concurrency
    return _play(args, settings, args.resume, resume=True)


def _play(args, settings, run_id: str | None, resume: bool) -> int:
    from core.eval import jobs as eval_jobs
    from core.eval import tools as tl

    job_id = args.job or os.environ.get("CSFORGE_JOB_ID")

    def progress(done: int, total: int, rec: dict | None) -> None:
        if rec is not None:
            print(f"[{done}/{total}] {'pass' if rec['passed'] else 'FAIL'} {rec['scenario']}", flush=True)
        eval_jobs.update(job_id, progress={"done": done, "total": total, "last": rec and rec["scenario"]})

    try:
        if threading.current_thread() is threading.main_thread():  # Stop sends SIGTERM: record, then exit
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        result = tk.run_tasks(settings, run_id=run_id, progress=progress, resume=resume)
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        eval_jobs.finish(job_id, "interrupted", error="interrupted")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # in-flight trials are dropped; finished ones are stored and a resume skips them
    except tl.EnvironmentMissing as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        eval_jobs.finish(job_id, "failed", error=str(exc))
        return 2
    except (KeyError, ValueError) as exc:
        print(exc.args[0] if exc.args else exc, file=sys.stderr)
        eval_jobs.finish(job_id, "failed", error=str(exc))
        return 2
    summary = result["summary"]
    print(pass_text(summary))
    eval_jobs.finish(job_id, "finished", result={"run_id": result["run_id"], "pass_rate": summary.get("pass_rate")})
    if args.min_pass_rate is not None and (summary.get("pass_rate") or 0) < args.min_pass_rate:
        return 1
    return 0
