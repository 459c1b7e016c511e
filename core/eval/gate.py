"""Release gate: promote a customer's candidate model to production only if it is not worse.

    python -m core.eval promote shop_zh-prompt-v2 --customer shop_zh [--tolerance 0.02]
           [--override "reason the candidate ships anyway"]

Both the candidate and the current production model are scored on the customer's suite (a
finished run of the same suite hash is reused unless --rerun). Promotion is refused when the
candidate's pass rate is lower than production's by more than the tolerance, or its error rate
higher by more than the tolerance. An override promotes anyway and records its reason. The
decision (both summaries, reasons, override) goes into the candidate's registry metrics under
`release` and into the jobs table (kind "release") for the history.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

from core.eval import store as es
from core import store


@dataclass
class Decision:
    candidate: str
    customer: str
    production: str | None
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    override_reason: str | None = None
    tolerance: float = 0.02
    candidate_run: str | None = None
    production_run: str | None = None
    candidate_summary: dict | None = None
    production_summary: dict | None = None
    decided_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("candidate_summary", "production_summary"):
            s = out[key] or {}
            out[key] = {k: s.get(k) for k in ("pass_rate", "error_rate", "latency_p95_s", "cost_per_session_usd")}
        return out


def production_model(customer: str) -> str | None:
    """The customer's production model (at most one by construction)."""
    from core import registry

    found = [e.name for e in registry.load().entries.values() if e.customer == customer and e.status == "production"]
    return found[0] if found else None


def compare(candidate: dict, production: dict, tolerance: float) -> list[str]:
    """Reasons the candidate is worse than production beyond the tolerance (empty: not worse)."""
    reasons = []
    cp, pp = candidate.get("pass_rate") or 0.0, production.get("pass_rate") or 0.0
    if cp < pp - tolerance:
        reasons.append(f"pass rate {cp:.1%} is below production's {pp:.1%} by more than {tolerance:.1%}")
    ce, pe = candidate.get("error_rate") or 0.0, production.get("error_rate") or 0.0
    if ce > pe + tolerance:
        reasons.append(f"error rate {ce:.1%} is above production's {pe:.1%} by more than {tolerance:.1%}")
    return reasons


def scored_run(model: str, customer: str, suite, *, reuse: bool, concurrency: int, judge: str | None,
               runner=None) -> dict:
    """A finished run of `model` on this exact suite: reused when one exists, else run now."""
    from core.eval.runner import RunSettings, run

    if reuse:
        for row in es.runs(customer=customer, model=model, status="finished"):
            if row["suite_hash"] == suite.hash():
                return row
    settings = RunSettings(model=model, customer=customer, concurrency=concurrency, judge=judge)
    return (runner or run)(settings, suite=suite)


def promote(candidate: str, customer: str, *, tolerance: float | None = None, override_reason: str | None = None,
            concurrency: int = 8, judge: str | None = None, reuse: bool = True, suite=None) -> Decision:
    """Score candidate and production on the customer's suite and promote if the gate allows."""
    from core import registry
    from core.eval.suite import load_suite

    entry = registry.get(candidate)
    suite = suite or load_suite(customer)
    tol = suite.thresholds.release_tolerance if tolerance is None else tolerance
    current = production_model(customer)
    decision = Decision(candidate, customer, current, False, tolerance=tol, override_reason=override_reason)
    if entry.customer and entry.customer != customer:
        decision.reasons.append(f"{candidate} belongs to customer {entry.customer}")
        return _record(decision)
    if current == candidate:
        decision.reasons.append(f"{candidate} is already production for {customer}")
        return _record(decision)
    cand = scored_run(candidate, customer, suite, reuse=reuse, concurrency=concurrency, judge=judge)
    decision.candidate_run, decision.candidate_summary = cand["id"], cand["summary"]
    if current:
        prod = scored_run(current, customer, suite, reuse=reuse, concurrency=concurrency, judge=judge)
        decision.production_run, decision.production_summary = prod["id"], prod["summary"]
        decision.reasons = compare(cand["summary"], prod["summary"], tol)
    if decision.reasons and not override_reason:
        return _record(decision)
    if current:
        registry.update(current, status="retired")
    registry.update(candidate, status="production", customer=customer)
    decision.promoted = True
    return _record(decision)


def _record(decision: Decision) -> Decision:
    from core import registry

    data = decision.as_dict()
    try:
        registry.set_metrics(decision.candidate, {"release": data})
    except Exception:  # an unknown candidate: the jobs row below still records the refusal
        pass
    db = store.db()
    with store.transaction(db):
        db["jobs"].insert({"id": uuid.uuid4().hex[:12], "kind": "release",
                           "name": f"{decision.candidate} -> {decision.customer}",
                           "status": "promoted" if decision.promoted else "refused", "config": store.dumps(data),
                           "pid": None, "progress": None, "log_path": None, "result": store.dumps(data),
                           "error": "; ".join(decision.reasons) or None, "created_at": time.time(),
                           "updated_at": time.time()})
    return decision


def history(customer: str | None = None, limit: int = 20) -> list[dict]:
    """Past gate decisions, newest first."""
    rows = store.db().query("select * from jobs where kind = 'release' order by created_at desc limit ?", [limit])
    out = [store.loads(r["result"], {}) for r in rows]
    return [d for d in out if not customer or d.get("customer") == customer]
