"""Scorecard data: latest run per model, comparisons, trends, transcripts and run diffs.

Everything the Scorecard page draws comes from here as plain lists/DataFrames, so the page
stays widgets only and the same numbers are testable without Streamlit.
"""
from __future__ import annotations

from typing import Any

from core.eval import store as es

COMPARE_COLUMNS = ["model", "baseline", "run_id", "pass_rate", "error_rate", "latency_p50_s", "latency_p95_s",
                   "cost_per_session_usd", "scenarios", "glitches", "suite_hash", "finished_at"]


def baseline_model() -> str | None:
    """The generic reference every comparison shows: a production base model with no customer
    (the embedded SmolLM2 in the shipped registry)."""
    from core import registry

    try:
        entries = registry.load().entries.values()
    except Exception:
        return None
    for e in entries:
        if e.type == "base" and e.status == "production" and not e.customer:
            return e.name
    return next((e.name for e in entries if e.type == "base"), None)


def all_calls_failed(rows: list[dict]) -> str | None:
    """The first error when every agent call of a run failed (no key, host down), else None."""
    turns = [t for r in rows for t in r["transcript"].get("turns", [])]
    if not turns or any(t.get("glitch") not in ("error", "timeout") for t in turns):
        return None
    glitches = [g for r in rows for g in r["transcript"].get("glitches", []) if g.get("kind") in ("error", "timeout")]
    return (glitches[0]["message"] if glitches else "every call failed")[:300]


def latest_runs(customer: str | None) -> dict[str, dict]:
    """The newest finished run of each model for a customer."""
    out: dict[str, dict] = {}
    for row in es.runs(customer=customer, status="finished"):
        if (row["settings"] or {}).get("kind") != "tasks":  # task runs have their own tab (tools_view)
            out.setdefault(row["model"], row)
    return out


def compare(customer: str | None, models: list[str] | None = None) -> list[dict]:
    """One row per model (latest finished run); the baseline model is always included."""
    latest = latest_runs(customer)
    base = baseline_model()
    wanted = list(models) if models else list(latest)
    if base and base not in wanted:
        wanted.append(base)
    rows = []
    for model in wanted:
        run = latest.get(model)
        s = (run or {}).get("summary") or {}
        rows.append({"model": model, "baseline": model == base, "run_id": run["id"] if run else None,
                     **{k: s.get(k) for k in COMPARE_COLUMNS[3:]}})
    return rows


def by_category(customer: str | None, models: list[str] | None = None) -> list[dict]:
    """Long table (model, category, pass_rate, n) for the latest run of each model."""
    rows = []
    for row in compare(customer, models):
        if not row["run_id"]:
            continue
        summary = es.get_run(row["run_id"])["summary"] or {}
        for cat, c in summary.get("by_category", {}).items():
            rows.append({"model": row["model"], "category": cat, "pass_rate": c["pass_rate"], "n": c["n"]})
    return rows


def trend(model: str, customer: str | None) -> list[dict]:
    """A model's finished runs on a customer's suite, oldest first."""
    rows = []
    for run in reversed(es.runs(customer=customer, model=model, status="finished")):
        if (run["settings"] or {}).get("kind") == "tasks":
            continue
        s = run["summary"] or {}
        rows.append({"run_id": run["id"], "created_at": run["created_at"], "suite_hash": run["suite_hash"],
                     "pass_rate": s.get("pass_rate"), "error_rate": s.get("error_rate"),
                     "latency_p95_s": s.get("latency_p95_s"), "cost_per_session_usd": s.get("cost_per_session_usd")})
    return rows


def scenario(run_id: str, scenario_id: str) -> dict | None:
    return next((r for r in es.results(run_id) if r["scenario"] == scenario_id), None)


def failed_checks(row: dict) -> list[dict]:
    return [c for c in row["checks"] if c["passed"] is False]


def diff(run_a: str, run_b: str) -> dict[str, Any]:
    """What changed from run A to run B, scenario by scenario (B newer, usually)."""
    a = {r["scenario"]: r for r in es.results(run_a)}
    b = {r["scenario"]: r for r in es.results(run_b)}
    both = sorted(set(a) & set(b))
    newly_failing = [s for s in both if a[s]["passed"] and not b[s]["passed"]]
    detail = {s: [f"turn {c['turn']}: {c['name']}: {c['reason']}" for c in failed_checks(b[s])]
              for s in newly_failing}
    return {"newly_failing": newly_failing,
            "newly_passing": [s for s in both if not a[s]["passed"] and b[s]["passed"]],
            "still_failing": [s for s in both if not a[s]["passed"] and not b[s]["passed"]],
            "only_in_a": sorted(set(a) - set(b)), "only_in_b": sorted(set(b) - set(a)),
            "why": detail}


# ---------------------------------------------------------------- checks, grid, transcripts

def check_state(check: dict) -> str:
    """pass | fail | skipped: a check that could not decide (judge not configured or failed) is not a pass."""
    return {True: "pass", False: "fail"}.get(check.get("passed"), "skipped")


CHECK_MARK = {"pass": "✓", "fail": "✗", "skipped": "–"}


def transcript_text(row: dict) -> str:
    """A scenario's conversation as text: each turn, the reply, every check with its state and reason."""
    lines = []
    tx = row["transcript"]
    for turn in tx.get("turns", []):
        lines.append(f"   [{turn['turn'] + 1}] user:  {turn['user']}")
        lines.append(f"       agent: {turn['reply'] or '(empty reply)'}"
                     + (f"  [glitch: {turn['glitch']}]" if turn.get("glitch") else ""))
        for c in turn.get("checks", []):
            state = check_state(c)
            lines.append(f"       {CHECK_MARK[state]} {state:7} {c['name']}: {c['reason']}")
    for c in tx.get("conversation_checks", []):
        state = check_state(c)
        lines.append(f"   conversation {CHECK_MARK[state]} {state:7} {c['name']}: {c['reason']}")
    return "\n".join(lines)


def grid(customer: str | None, models: list[str] | None = None) -> list[dict]:
    """Test x model: one row per scenario, one column per model (latest finished run): pass | fail | None."""
    latest = latest_runs(customer)
    chosen = [m for m in (models or list(latest)) if m in latest]
    cells: dict[str, dict] = {}
    for model in chosen:
        for r in es.results(latest[model]["id"]):
            row = cells.setdefault(r["scenario"], {"scenario": r["scenario"], "category": r["category"]})
            row[model] = "pass" if r["passed"] else "fail"
    return [{**row, **{m: row.get(m) for m in chosen}} for _, row in sorted(cells.items())]


def registry_scores(customer: str) -> list[dict]:
    """Scores in registry.yaml for this customer whose run is not in this console's database
    (e.g. shipped with the repo): shown as such, so Home and the Scorecard tell the same story."""
    from core import registry

    stored = {r["id"] for r in es.runs(customer=customer)}
    rows = []
    for e in registry.load().entries.values():
        s = registry.eval_summaries(e.metrics).get(customer)
        if s and s.get("run_id") not in stored:
            rows.append({"model": e.name, "run_id": s.get("run_id"), "pass_rate": s.get("pass_rate"),
                         "error_rate": s.get("error_rate"), "scenarios": s.get("scenarios"),
                         "finished_at": s.get("finished_at"), "suite_hash": s.get("suite_hash")})
    return rows


def reap_interrupted() -> list[str]:
    """Runs still 'running' whose eval job or recorded process is no longer alive become 'interrupted'."""
    from core import jobs

    live = {}
    for job in jobs.list_jobs("eval", limit=200):
        run_id = (job.config or {}).get("run_id")
        if run_id:
            live[run_id] = live.get(run_id, False) or job.active
    from core.eval import owners

    dead = set(owners.dead_runs())  # the recorded process is gone, even for a run no job started
    reaped = []
    for run in es.runs(status="running"):
        if run["id"] in dead or (run["id"] in live and not live[run["id"]]):
            es.set_status(run["id"], "interrupted")
            reaped.append(run["id"])
    return reaped


def cost_note(rows: list[dict]) -> str | None:
    """A note replacing the cost chart when it would show nothing (every scored model costs $0)."""
    costs = [r.get("cost_per_session_usd") for r in rows if r.get("run_id")]
    if costs and all(not c for c in costs):
        return (f"Cost per session: all $0 (local) — {len(costs)} model{'s' if len(costs) != 1 else ''} "
                "served on this machine or unpriced, so there is nothing to chart.")
    return None
