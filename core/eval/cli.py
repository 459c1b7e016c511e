"""CS eval: run multi-turn scenario suites against any agent and score it.

    python -m core.eval run --model shop_zh-prompt --customer shop_zh [--suite PATH]
           [--concurrency 8] [--min-pass-rate 0.8] [--judge MODEL] [--resume RUN_ID] [--no-cache]
    python -m core.eval validate [--customer shop_zh]        # load every suite, report typos
    python -m core.eval show RUN_ID [--failed]               # scorecard + failed checks of a run
    python -m core.eval diff RUN_A RUN_B                     # what newly fails in B
    python -m core.eval promote CANDIDATE --customer shop_zh [--tolerance 0.02] [--override REASON]
    python -m core.eval regress SESSION_ID [--message MESSAGE_ID]   # flagged chat -> regression
    python -m core.eval agreement --customer shop_zh         # human flags vs automatic checks
    python -m core.eval run --customer tau_retail --model MODEL --simulator MODEL --trials 4 --split test
                                                             # task scenarios with tools (core/eval/tasks.py)
    python -m core.eval tools shop_zh [--json]              # the tools an agent gets, derived from tools.py
    python -m core.eval calibrate --customer shop_zh [--judge MODEL] [--split dev|heldout|all]

`--model` is a registry name, a LiteLLM model string or an OpenAI-compatible URL.

Suites (suites/generic.yaml + customers/<name>/scenarios.yaml + customers/<name>/regressions.yaml)
are described in core/eval/suite.py. A scenario passes when it ran without a glitch and none of
its checks failed (turn checks, conversation checks, the latency budget, and the undesired
behaviours checked on every agent turn).

Scores of a run:
  pass rate       passed scenarios / scenarios, overall and per category
  error rate      agent turns with a glitch or a failed undesired-behaviour check, divided by
                  all agent turns. A glitch is a failed call, a timeout, an exception or an empty
                  reply; undesired behaviours are leak, empty, repeated, wrong_language, promise,
                  rude, grounding, contradiction, limits and injection (and the judge with
                  judge.every_turn). A turn counts once however many of these it has.
  latency         p50 and p95 of the agent's reply time per turn (failed calls left out)
  cost/session    the agent's cost summed over a scenario's turns, averaged over scenarios
                  (judge and simulator calls are reported apart)
A run's summary is written to eval_runs.summary and, for a registry model, to its entry's
metrics under `cs_eval_<customer>`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from core.eval.runner import RunSettings, run  # noqa: F401
from core.eval.subset import SubsetError
from core.eval.suite import SuiteError, load_suite  # noqa: F401


def _table(rows: list[list], head: list[str]) -> str:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def scorecard_text(summary: dict) -> str:
    """The scorecard printed at the end of a run."""
    cats = [[cat, c["n"], c["passed"], _pct(c["pass_rate"])] for cat, c in summary["by_category"].items()]
    head = (f"run {summary.get('run_id')}  model {summary.get('model')}  customer {summary.get('customer')}  "
            f"suite {summary.get('suite_hash')}\n"
            f"pass rate {_pct(summary['pass_rate'])} ({summary['passed']}/{summary['scenarios']})  "
            f"error rate {_pct(summary['error_rate'])} ({summary['bad_turns']}/{summary['agent_turns']} turns)  "
            f"latency p50 {summary['latency_p50_s']}s p95 {summary['latency_p95_s']}s  "
            f"cost/session ${summary['cost_per_session_usd']}  glitches {summary['glitches']}  "
            f"inconclusive checks {summary['checks_inconclusive']}")
    return head + "\n\n" + _table(cats, ["category", "scenarios", "passed", "pass rate"])


def _job_progress(job_id: str | None):
    """Progress callback: prints a line and, for a job started from the Scorecard, updates it."""
    from core.eval import jobs as eval_jobs

    def progress(done: int, total: int, rec: dict | None) -> None:
        if rec is not None:
            mark = "pass" if rec["passed"] else "FAIL"
            print(f"[{done}/{total}] {mark} {rec['scenario']}", flush=True)
        if job_id:
            eval_jobs.update(job_id, progress={"done": done, "total": total,
                                               "last": rec["scenario"] if rec else None})
    return progress


def cmd_run(args) -> int:
    from core.eval import store as eval_store
    from core.eval import task_cli

    if task_cli.wants_tasks(args):  # task scenarios with tools: core/eval/task_cli.py
        return task_cli.cmd_run_tasks(args)
    if args.resume:
        old = eval_store.get_run(args.resume)
        if old is None:
            print(f"no eval run '{args.resume}'", file=sys.stderr)
            return 2
        settings = RunSettings(**{**old["settings"], "concurrency": args.concurrency or old["settings"]["concurrency"]})
    else:
        if not args.model:
            print("--model is required (or --resume RUN_ID)", file=sys.stderr)
            return 2
        from core import preflight

        try:
            preflight.require(preflight.eval_run(args.model, args.customer, args.suite))
        except preflight.PreflightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        settings = RunSettings(model=args.model, customer=args.customer, suite_path=args.suite,
                               concurrency=args.concurrency or 8, timeout_s=args.timeout, cache=not args.no_cache,
                               max_tokens=args.max_tokens,
                               judge=args.judge, simulator=args.simulator,
                               only=[x.strip() for x in args.only.split(",") if x.strip()] if args.only else None,
                               latency_budget_s=args.latency_budget)
    job_id = args.job or os.environ.get("CSFORGE_JOB_ID")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from core.eval import jobs as eval_jobs

    try:
        result = run(settings, run_id=args.resume or args.run_id, resume=bool(args.resume),
                     progress=_job_progress(job_id))
    except (SuiteError, SubsetError) as exc:
        print(exc, file=sys.stderr)
        eval_jobs.finish(job_id, "failed", error=str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        eval_jobs.finish(job_id, "interrupted", error="interrupted")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # do not wait for in-flight calls: finished scenarios are already stored
    summary = result["summary"]
    if result["status"] == "failed":
        print(f"run {result['id']} failed: every agent call failed ({summary['all_calls_failed']}); "
              "not scored", file=sys.stderr)
        eval_jobs.finish(job_id, "failed", error=summary["all_calls_failed"])
        return 1
    print(scorecard_text(summary))
    eval_jobs.finish(job_id, "finished", result={"run_id": result["id"], "pass_rate": summary["pass_rate"],
                                                 "error_rate": summary["error_rate"]})
    threshold = args.min_pass_rate
    if threshold is not None and (summary["pass_rate"] or 0) < threshold:
        print(f"FAILED the gate: pass rate {_pct(summary['pass_rate'])} < {_pct(threshold)}", file=sys.stderr)
        return 1
    return 0


def cmd_tools(args) -> int:
    from core.eval import task_cli

    return task_cli.cmd_tools(args)


def cmd_validate(args) -> int:
    from core.dataset import list_customers

    names = [args.customer] if args.customer else [None] + [c.name for c in list_customers()]
    bad = 0
    for name in names:
        try:
            suite = load_suite(name, args.suite)
            multi = sum(1 for s in suite.scenarios if len(s.turns) > 1)
            print(f"{name or 'generic'}: {len(suite.scenarios)} scenarios ({multi} multi-turn), hash {suite.hash()}")
        except (SuiteError, KeyError) as exc:
            bad += 1
            print(exc, file=sys.stderr)
            continue
        if name and not args.no_references:
            bad += _validate_references(suite, name)
    return 1 if bad else 0


def _validate_references(suite, customer: str) -> int:
    """1 when a reference reply of the customer's suite fails its own checks (each failure printed)."""
    from core.eval.references import check_references

    played, failures = check_references(suite, customer)
    print(f"{customer}: reference replies of {played} scenarios: "
          + (f"{len(failures)} failed checks" if failures else "all pass"))
    for f in failures:
        print(f"  {f}", file=sys.stderr)
    return 1 if failures else 0


def cmd_show(args) -> int:
    from core.eval import report as eval_report
    from core.eval import store as eval_store

    eval_report.reap_interrupted()  # a run whose process was killed reads as interrupted, not running
    row = eval_store.get_run(args.run_id)
    if row is None:
        print(f"no eval run '{args.run_id}'", file=sys.stderr)
        return 2
    if row["summary"] and row["summary"].get("kind") == "tasks":
        from core.eval.task_cli import pass_text

        print(pass_text(row["summary"]))
    elif row["summary"]:
        print(scorecard_text(row["summary"]))
    else:
        print(f"run {row['id']} is {row['status']}")
    for r in eval_store.results(args.run_id):
        if args.failed and r["passed"]:
            continue
        print(f"\n{'pass' if r['passed'] else 'FAIL'} {r['scenario']} ({r['category']}) {r['error'] or ''}")
        if args.transcripts:
            from core.eval.report import transcript_text

            print(transcript_text(r))
            continue
        for c in r["checks"]:
            if c["passed"] is False:
                print(f"   turn {c['turn']}: {c['name']}: {c['reason']}")
    return 0


def cmd_diff(args) -> int:
    from core.eval import report as eval_report

    d = eval_report.diff(args.run_a, args.run_b)
    for key in ("newly_failing", "newly_passing", "still_failing", "only_in_a", "only_in_b"):
        print(f"{key}: {', '.join(d[key]) or '-'}")
    return 1 if d["newly_failing"] else 0


def cmd_promote(args) -> int:
    from core.eval import gate as eval_gate

    # a kill (SIGTERM) of a promote mid-run records the run as interrupted, as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    decision = eval_gate.promote(args.candidate, args.customer, tolerance=args.tolerance,
                                 override_reason=args.override, concurrency=args.concurrency or 8,
                                 judge=args.judge, reuse=not args.rerun, progress=_job_progress(None))
    print(json.dumps(decision.as_dict(), ensure_ascii=False, indent=2))
    return 0 if decision.promoted else 1


def cmd_regress(args) -> int:
    from core.eval import loop as eval_loop

    scenario, path = eval_loop.add_regression(args.session_id, message_id=args.message)
    print(f"added scenario '{scenario.id}' to {path}")
    return 0


def cmd_agreement(args) -> int:
    from core.eval import loop as eval_loop

    rep = eval_loop.agreement(args.customer)
    print(json.dumps({k: v for k, v in rep.items() if k != "messages"}, ensure_ascii=False, indent=2))
    return 0


def cmd_calibrate(args) -> int:
    from core.eval import calibrate

    splits = ["dev", "heldout"] if args.split == "both" else [args.split]
    reports = [calibrate.evaluate(args.customer, split, judge=args.judge) for split in splits]
    if args.split == "both" and not args.judge:
        calibrate.save(args.customer, reports)  # what the Scorecard shows
    if args.json:
        print(json.dumps(reports, ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(calibrate.table(r) for r in reports))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.eval", description="CS eval: suites, runs, scorecards.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a suite against a model")
    r.add_argument("--model")
    r.add_argument("--customer")
    r.add_argument("--suite", help="suite file (default: generic + the customer's)")
    r.add_argument("--concurrency", type=int)
    r.add_argument("--timeout", type=float, default=60.0, help="seconds per agent call, retries included")
    r.add_argument("--max-tokens", type=int, default=256, help="reply length cap per agent turn")
    r.add_argument("--min-pass-rate", type=float, help="exit 1 below this pass rate (a CI gate)")
    r.add_argument("--judge", help="judge model for judge checks when the suite names none")
    r.add_argument("--simulator", help="model that plays the customer in `simulate` scenarios")
    r.add_argument("--only", metavar="IDS_OR_CATEGORIES", help="comma-separated scenario ids or categories to run")
    r.add_argument("--latency-budget", type=float, metavar="S",
                   help="per-turn latency budget in seconds for this run (0: off; default: the suite's)")
    r.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run")
    r.add_argument("--run-id", help=argparse.SUPPRESS)
    r.add_argument("--job", help=argparse.SUPPRESS)
    r.add_argument("--no-cache", action="store_true", help="call the model even for identical calls")
    r.add_argument("--trials", type=int, help="task runs: trials per task (1-8), pass^1..pass^k")
    r.add_argument("--split", help="task runs: train | test (default: all tasks)")
    r.add_argument("--task", action="append", help="task runs: only this task id (repeatable)")
    r.add_argument("--force", action="store_true", help="task runs: score an agent that failed the tool probe")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="load suites, and play each client's reference replies through its checks")
    v.add_argument("--customer")
    v.add_argument("--suite")
    v.add_argument("--no-references", action="store_true", help="only load the suites")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("show", help="print a run's scorecard and failures")
    s.add_argument("run_id")
    s.add_argument("--failed", action="store_true")
    s.add_argument("--transcripts", action="store_true", help="print every turn: user, agent, failed checks")
    s.set_defaults(func=cmd_show)
    d = sub.add_parser("diff", help="compare two runs")
    d.add_argument("run_a")
    d.add_argument("run_b")
    d.set_defaults(func=cmd_diff)
    p = sub.add_parser("promote", help="release gate: promote a candidate to production")
    p.add_argument("candidate")
    p.add_argument("--customer", required=True)
    p.add_argument("--tolerance", type=float)
    p.add_argument("--override", metavar="REASON")
    p.add_argument("--concurrency", type=int)
    p.add_argument("--judge")
    p.add_argument("--rerun", action="store_true", help="run both models even if a run of this suite exists")
    p.set_defaults(func=cmd_promote)
    g = sub.add_parser("regress", help="turn a flagged sandbox session into a regression scenario")
    g.add_argument("session_id")
    g.add_argument("--message", help="the flagged message (default: the first flagged one)")
    g.set_defaults(func=cmd_regress)
    t = sub.add_parser("tools", help="a client's tools as the agent sees them (schemas from tools.py)")
    t.add_argument("customer")
    t.add_argument("--json", action="store_true", help="the OpenAI tool schemas")
    t.set_defaults(func=cmd_tools)
    a = sub.add_parser("agreement", help="human flags vs automatic checks")
    a.add_argument("--customer")
    a.set_defaults(func=cmd_agreement)
    c = sub.add_parser("calibrate", help="play the labelled calibration replies through the checks")
    c.add_argument("--customer", required=True)
    c.add_argument("--judge", help="also ask this judge model on every reply; reports its agreement")
    c.add_argument("--split", choices=["dev", "heldout", "all", "both"], default="both",
                   help="which half of the set (default both, reported apart)")
    c.add_argument("--json", action="store_true", help="the full report, missed and falsely failed ids included")
    c.set_defaults(func=cmd_calibrate)
    args = ap.parse_args(argv)
    return args.func(args)
