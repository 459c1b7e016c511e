"""Release gate: promote a customer's candidate model to production only if it is not worse.

    python -m core.eval promote shop_zh-prompt-v2 --customer shop_zh [--tolerance 0.02]
           [--override "reason the candidate ships anyway"]

Both the candidate and the current production model are scored on the customer's suite (a
finished run of the same suite hash is reused unless --rerun; a run started here prints its
progress, and an interrupted one is recorded as interrupted). Promotion is refused when the
candidate's pass rate is lower than production's by more than the tolerance, or its error rate
higher by more than the tolerance; with no production model yet, the candidate must reach the
suite's own pass-rate threshold. An override promotes anyway and records its reason. The
decision (both summaries, reasons, override) goes into the candidate's registry metrics under
`release` and into the jobs table (kind "release") for the history.

Production per customer has one source, `production_map()`: a customer's own model with status
production, or a shared model (no `customer`, e.g. a base model) whose metrics list the customer
under `production_for`. Promoting a shared model never rewrites its `customer`, so it can be
production for several customers at once.
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


SHARED_KEY = "production_for"  # metrics key of a shared model: the customers it serves in production


def production_map() -> dict[str, str]:
    """customer -> production model, for every customer that has one (the one place to ask)."""
    from core import registry

    out: dict[str, str] = {}
    for e in registry.load().entries.values():
        if e.customer and e.status == "production":
            out.setdefault(e.customer, e.name)
        elif not e.customer:
            for customer in (e.metrics or {}).get(SHARED_KEY) or []:
                out.setdefault(customer, e.name)
    return out


def production_model(customer: str) -> str | None:
    """The customer's production model, or None."""
    return production_map().get(customer)


def _set_production(name: str, customer: str, on: bool) -> None:
    """Make `name` production for `customer` (or stop it); a shared model keeps its `customer` empty."""
    from core import registry

    entry = registry.get(name)
    if entry.customer:
        registry.update(name, status="production" if on else "retired")
        return
    serving = [c for c in (entry.metrics or {}).get(SHARED_KEY) or [] if c != customer]
    registry.set_metrics(name, {SHARED_KEY: sorted(serving + ([customer] if on else []))})


def first_promotion(summary: dict, threshold: float) -> list[str]:
    """With no production model to compare against, the candidate must meet the suite's threshold."""
    rate = summary.get("pass_rate") or 0.0
    if rate < threshold:
        return [f"no production model yet: the first one must reach the suite's pass-rate threshold "
                f"{threshold:.0%}, the candidate has {rate:.1%}"]
    return []


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


class NeedsRun(RuntimeError):
    """No finished run to reuse and running one here was not allowed (the page starts it as a job)."""


def scored_run(model: str, customer: str, suite, *, reuse: bool, concurrency: int, judge: str | None,
               runner=None, progress=None, run_missing: bool = True) -> dict:
    """A finished run of `model` on this exact suite: reused when one exists, else run now."""
    from core.eval.runner import RunSettings, run

    if reuse:
        for row in es.runs(customer=customer, model=model, status="finished"):
            if row["suite_hash"] == suite.hash():
                return row
    if not run_missing:
        raise NeedsRun(f"{model} has no finished run of the current {customer} suite: start one (Run tab)")
    settings = RunSettings(model=model, customer=customer, concurrency=concurrency, judge=judge)
    return (runner or run)(settings, suite=suite, progress=progress)


def promote(candidate: str, customer: str, *, tolerance: float | None = None, override_reason: str | None = None,
            concurrency: int = 8, judge: str | None = None, reuse: bool = True, suite=None,
            progress=None, run_missing: bool = True) -> Decision:
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
    how = dict(reuse=reuse, concurrency=concurrency, judge=judge, progress=progress, run_missing=run_missing)
    try:
        cand = scored_run(candidate, customer, suite, **how)
        prod = scored_run(current, customer, suite, **how) if current else None
    except NeedsRun as exc:
        decision.reasons.append(str(exc))
        return _record(decision)
    decision.candidate_run, decision.candidate_summary = cand["id"], cand["summary"]
    if cand["status"] != "finished":
        decision.reasons.append(f"the candidate's run {cand['id']} is {cand['status']}: "
                                f"{(cand['summary'] or {}).get('all_calls_failed') or 'not scored'}")
        return _record(decision)  # not even an override ships a model that never answered
    if prod:
        decision.production_run, decision.production_summary = prod["id"], prod["summary"]
        decision.reasons = compare(cand["summary"], prod["summary"], tol)
    else:
        decision.reasons = first_promotion(cand["summary"], suite.thresholds.pass_rate)
    if decision.reasons and not override_reason:
        return _record(decision)
    if current:
        _set_production(current, customer, False)
    _set_production(candidate, customer, True)
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
