"""CS-eval results in SQLite (tables eval_runs, eval_results of core.store) and the run summary.

Error rate = agent turns with a glitch (failed call, timeout, exception, empty reply) or a
failed undesired-behaviour check, divided by all agent turns (see core/eval.py).
"""
from __future__ import annotations

import time
from typing import Any

from core import store
from core.redact import redact

STATUSES = ("running", "finished", "interrupted", "failed")


def create_run(run_id: str, settings: dict, suite_hash: str, suite_name: str) -> None:
    db = store.db()
    with store.transaction(db):
        db["eval_runs"].insert({"id": run_id, "model": settings["model"],
                                "customer": settings.get("customer") or suite_name,
                                "suite_hash": suite_hash, "settings": store.dumps(settings),
                                "status": "running", "summary": None, "created_at": time.time(),
                                "finished_at": None})
        _claim(db, run_id)


def _claim(db, run_id: str) -> None:
    """Record this process as the one playing the run (core.eval.owners tells a dead owner)."""
    from core.eval import owners

    db["eval_run_owners"].upsert({"run_id": run_id, **owners.me(), "claimed_at": time.time()}, pk="run_id")


def _decoded(row: dict) -> dict:
    """An eval_runs row with its settings and summary decoded."""
    row["settings"] = store.loads(row["settings"], {})
    row["summary"] = store.loads(row["summary"], None)
    return row


def get_run(run_id: str) -> dict | None:
    rows = list(store.db().query("select * from eval_runs where id = ?", [run_id]))
    return _decoded(rows[0]) if rows else None


def set_status(run_id: str, status: str, summary: dict | None = None) -> None:
    db = store.db()
    fields: dict[str, Any] = {"status": status}
    if summary is not None:
        fields.update(summary=store.dumps(summary), finished_at=time.time())
    with store.transaction(db):
        db["eval_runs"].update(run_id, fields)
        if status == "running":  # a resume: the resuming process owns the run now
            _claim(db, run_id)


RESULT_COLUMNS = ("id", "run_id", "scenario", "category", "passed", "transcript", "checks", "latency_s", "cost_usd",
                  "input_tokens", "output_tokens", "glitches", "agent_turns", "error", "created_at")


def writer():
    """One connection for a run's writes (the runner's main thread is the only writer).

    synchronous=NORMAL: in WAL mode a commit is then safe against a crash of this process and
    loses at most the last scenarios on a power cut, which a resume replays; FULL costs an fsync
    per scenario (about 40 ms here), which was most of a fast run's time."""
    db = store.db()
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def save_result(run_id: str, rec: dict, db=None) -> None:
    """One scenario's record; replaces an earlier one for the same scenario (a resumed run)."""
    db = db or store.db()
    errors = [g["message"] for g in rec["glitches"] if g["kind"] not in ("skipped",)]
    row = {"id": f"{run_id}:{rec['scenario']}", "run_id": run_id, "scenario": rec["scenario"],
           "category": rec["category"], "passed": int(rec["passed"]),
           "transcript": store.dumps({k: v for k, v in rec.items() if k != "checks"}),
           "checks": store.dumps(rec["checks"]), "latency_s": rec["latency_s"], "cost_usd": rec["cost_usd"],
           "input_tokens": rec["input_tokens"], "output_tokens": rec["output_tokens"],
           "glitches": len([g for g in rec["glitches"] if g["kind"] != "skipped"]),
           "agent_turns": rec["agent_turns"], "error": redact("; ".join(errors)) or None, "created_at": time.time()}
    sql = (f"insert or replace into eval_results ({', '.join(RESULT_COLUMNS)}) "
           f"values ({', '.join('?' * len(RESULT_COLUMNS))})")
    with db.conn:
        db.conn.execute(sql, [row[c] for c in RESULT_COLUMNS])


def results(run_id: str) -> list[dict]:
    """A run's scenario records with transcript and checks decoded, in scenario order."""
    rows = list(store.db().query("select * from eval_results where run_id = ? order by scenario", [run_id]))
    for row in rows:
        row["transcript"] = store.loads(row["transcript"], {})
        row["checks"] = store.loads(row["checks"], [])
    return rows


def done_scenarios(run_id: str) -> set[str]:
    return {r["scenario"] for r in store.db().query("select scenario from eval_results where run_id = ?", [run_id])}


def runs(customer: str | None = None, model: str | None = None, status: str | None = None) -> list[dict]:
    """Runs, newest first, with decoded summaries."""
    where, args = [], []
    for col, val in (("customer", customer), ("model", model), ("status", status)):
        if val:
            where.append(f"{col} = ?")
            args.append(val)
    sql = "select * from eval_runs" + (" where " + " and ".join(where) if where else "") + " order by created_at desc"
    return [_decoded(row) for row in store.db().query(sql, args)]


# ---------------------------------------------------------------- summary

def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(rows: list[dict]) -> dict:
    """Scores of a run from its scenario rows (decoded by `results`)."""
    n = len(rows)
    by_cat: dict[str, dict] = {}
    for r in rows:
        c = by_cat.setdefault(r["category"], {"n": 0, "passed": 0})
        c["n"] += 1
        c["passed"] += int(r["passed"])
    for c in by_cat.values():
        c["pass_rate"] = round(c["passed"] / c["n"], 4)
    turns = [t for r in rows for t in r["transcript"].get("turns", [])]
    bad = sum(int(r["transcript"].get("bad_turns", 0)) for r in rows)
    latencies = [t["latency_s"] for t in turns if not t.get("glitch") or t["glitch"] == "empty"]
    checks = [c for r in rows for c in r["checks"]]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return {
        "scenarios": n, "passed": sum(int(r["passed"]) for r in rows),
        "pass_rate": round(sum(int(r["passed"]) for r in rows) / n, 4) if n else None,
        "by_category": dict(sorted(by_cat.items())),
        "agent_turns": len(turns), "bad_turns": bad,
        "error_rate": round(bad / len(turns), 4) if turns else None,
        "glitches": sum(int(r["glitches"] or 0) for r in rows),
        "latency_p50_s": round(p50, 4) if p50 is not None else None,
        "latency_p95_s": round(p95, 4) if p95 is not None else None,
        "cost_per_session_usd": round(sum(r["cost_usd"] or 0 for r in rows) / n, 6) if n else None,
        "tokens_per_session": round(sum((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in rows) / n, 1)
        if n else None,
        "judge_cost_usd": round(sum(r["transcript"].get("judge_cost_usd", 0) for r in rows), 6),
        "checks_failed": sum(1 for c in checks if c["passed"] is False),
        "checks_inconclusive": sum(1 for c in checks if c["passed"] is None),
    }
