"""Human eval closes the loop: flagged sandbox chats become regression scenarios, and human
flags are compared with the automatic checks.

Regression scenarios are appended to customers/<name>/regressions.yaml (machine-written, one
list under `regressions:`; the hand-written scenarios.yaml keeps its comments). The customer's
suite loads them with category `regression`. A scenario replays the session's user turns up
to the flagged reply; the flag's category becomes a check the new reply must pass (see
FLAG_CHECKS), plus "not similar to the flagged reply" so the same answer cannot come back.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from core import store
from core.eval.suite import REGRESSIONS_FILE, Scenario
from core.paths import CUSTOMERS_DIR

# sandbox flag category -> the checks that must pass on the replayed turn
FLAG_CHECKS: dict[str, list[dict]] = {
    "leaked internal information": [{"undesired": "leak"}],
    "rude": [{"undesired": "rude"}],
    "wrong language": [{"undesired": "wrong_language"}],
    "failed to hand off to a human": [{"handoff": True}],
    "glitch/empty/repeat": [{"undesired": "empty"}, {"undesired": "repeated"}],
    "policy violation": [{"undesired": "promise"}],
    "hallucination": [],
    "other": [],
}
# flag category -> the undesired behaviour an automatic check would report for it
FLAG_BEHAVIOUR = {"leaked internal information": "leak", "rude": "rude", "wrong language": "wrong_language",
                  "glitch/empty/repeat": "empty|repeated", "policy violation": "promise"}


def _session(session_id: str, db=None) -> tuple[dict, list[dict], list[dict]]:
    db = db or store.db()
    rows = list(db.query("select * from sandbox_sessions where id = ?", [session_id]))
    if not rows:
        raise KeyError(f"unknown sandbox session '{session_id}'")
    msgs = list(db.query("select * from sandbox_messages where session_id = ? order by seq", [session_id]))
    flags = list(db.query("select * from flags where session_id = ? or message_id in "
                          "(select id from sandbox_messages where session_id = ?) order by created_at",
                          [session_id, session_id]))
    return rows[0], msgs, flags


def flagged_sessions(customer: str | None = None) -> list[dict]:
    """Sessions with at least one flag: id, title, customer, flags count."""
    sql = ("select s.id, s.title, s.customer, s.models, count(f.id) as flags from sandbox_sessions s "
           "join sandbox_messages m on m.session_id = s.id join flags f on f.message_id = m.id "
           + ("where s.customer = ? " if customer else "") + "group by s.id order by s.updated_at desc")
    return list(store.db().query(sql, [customer] if customer else []))


def session_to_scenario(session_id: str, message_id: str | None = None) -> tuple[Scenario, str | None]:
    """The regression scenario for a flagged reply (default: the session's first flagged reply)."""
    session, msgs, flags = _session(session_id)
    if not flags:
        raise ValueError(f"session {session_id} has no flagged reply")
    flag = next((f for f in flags if f["message_id"] == message_id), None) if message_id else flags[0]
    if flag is None:
        raise ValueError(f"message {message_id} of session {session_id} is not flagged")
    target = next(m for m in msgs if m["id"] == flag["message_id"])
    model = target["model"]
    context = next((store.loads(m["content"], {}) for m in msgs if m["role"] == "context"), {})
    users = [m["content"] for m in msgs if m["role"] == "user" and m["seq"] < target["seq"]]
    if not users:
        raise ValueError("the flagged reply has no user message before it")
    checks = list(FLAG_CHECKS.get(flag["category"], []))
    checks.append({"name": "not the flagged reply", "not_similar": {"text": target["content"] or "(empty)",
                                                                     "threshold": 0.85}})
    if flag["comment"] or not FLAG_CHECKS.get(flag["category"]):
        checks.append({"judge": {"rubric": f"A tester flagged an earlier reply as '{flag['category']}': "
                                           f"{flag['comment'] or 'no comment'}. The new reply must not repeat "
                                           f"that mistake."}})
    turns = [{"user": u} for u in users]
    turns[-1]["checks"] = checks
    scenario = Scenario.model_validate({
        "id": f"reg-{session_id[:8]}-{target['seq']}".lower(), "category": "regression",
        "title": f"sandbox: {session['title']} ({flag['category']})", "context": context, "turns": turns,
        "tags": ["sandbox", flag["category"]],
        "source": {"session_id": session_id, "message_id": target["id"], "model": model,
                   "flag": flag["category"], "comment": flag["comment"], "flagged_reply": target["content"]}})
    return scenario, session.get("customer")


def add_regression(session_id: str, message_id: str | None = None, customer: str | None = None,
                   path: Path | None = None) -> tuple[Scenario, Path]:
    """Append the scenario to the customer's regressions.yaml (replacing one with the same id)."""
    scenario, session_customer = session_to_scenario(session_id, message_id)
    customer = customer or session_customer
    if path is None:
        if not customer:
            raise ValueError("the session has no customer; pass customer= or path=")
        path = CUSTOMERS_DIR / customer / REGRESSIONS_FILE
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    items = [s for s in ((data or {}).get("regressions") or []) if s.get("id") != scenario.id]
    items.append(scenario.model_dump(mode="json", exclude_defaults=True))
    header = ("# Regression scenarios made from flagged sandbox sessions (python -m core.eval regress).\n"
              "# Machine-written; edit freely, the schema is core/eval/suite.py's Scenario.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump({"regressions": items}, allow_unicode=True, sort_keys=False, width=100),
                    encoding="utf-8")
    return scenario, path


def agreement(customer: str | None) -> dict:
    """Human flags vs automatic undesired-behaviour checks on the same sandbox replies.

    Covers the customer's sessions that a human rated or flagged. For each agent reply:
    human = flagged; auto = any undesired check failed. Reports counts, raw agreement,
    Cohen's kappa, and per flag category how often the automatic check caught it.
    """
    from core.eval import checks as ck
    from core.eval.runner import expected_languages
    from core.eval.suite import load_suite

    suite = load_suite(customer) if customer else None
    env = ck.Env(language=suite.language if suite else None, handoff_message=suite.handoff_message if suite else None,
                 handoff_phrases=suite.handoff_phrases if suite else [],
                 undesired=suite.undesired if suite else ck.Undesired())
    db = store.db()
    where = "where customer = ?" if customer else ""
    sessions = [r for r in db.query(f"select * from sandbox_sessions {where}", [customer] if customer else [])]
    rows = []
    for s in sessions:
        _, msgs, flags = _session(s["id"], db)  # one connection for every session, not one each
        if s["rating"] is None and not flags:
            continue
        by_msg: dict[str, list[str]] = {}
        for f in flags:
            by_msg.setdefault(f["message_id"], []).append(f["category"])
        history: dict[str, list[str]] = {}
        last_user = ""
        for m in msgs:
            if m["role"] == "user":
                last_user = m["content"] or ""
                continue
            if m["role"] != "assistant":
                continue
            history.setdefault(m["model"], []).append(m["content"] or "")
            ctx = ck.Ctx(m["content"] or "", history[m["model"]], last_user, [], m["latency_s"] or 0.0, env,
                         expected_languages(None, last_user, env.language))
            failed = [name.split(":")[1] for name, check in ck.undesired_checks(env) if check(ctx).passed is False]
            rows.append({"session_id": s["id"], "message_id": m["id"], "model": m["model"],
                         "human": by_msg.get(m["id"], []), "auto": failed})
    return _agreement_stats(rows)


def _agreement_stats(rows: list[dict]) -> dict:
    n = len(rows)
    both = sum(1 for r in rows if r["human"] and r["auto"])
    human_only = sum(1 for r in rows if r["human"] and not r["auto"])
    auto_only = sum(1 for r in rows if r["auto"] and not r["human"])
    neither = n - both - human_only - auto_only
    agree = (both + neither) / n if n else None
    kappa = None
    if n:
        p_h, p_a = (both + human_only) / n, (both + auto_only) / n
        expected = p_h * p_a + (1 - p_h) * (1 - p_a)
        kappa = round((agree - expected) / (1 - expected), 4) if expected < 1 else 1.0
    per_cat: dict[str, dict] = {}
    for r in rows:
        for cat in r["human"]:
            c = per_cat.setdefault(cat, {"flagged": 0, "caught": 0})
            c["flagged"] += 1
            wanted = FLAG_BEHAVIOUR.get(cat)
            if wanted and any(b in wanted.split("|") for b in r["auto"]):
                c["caught"] += 1
    return {"replies": n, "both": both, "human_only": human_only, "auto_only": auto_only, "neither": neither,
            "agreement": round(agree, 4) if agree is not None else None, "kappa": kappa,
            "by_category": per_cat, "messages": rows}
