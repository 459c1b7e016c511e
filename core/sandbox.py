"""Human eval sandbox: chat sessions with one or two models, flags on replies, ratings, stats.

    from core import sandbox
    s = sandbox.create_session(["smollm2-135m"], customer="shop_zh", tester="ana")
    replies = sandbox.ask(s.id, "我的包裹在哪里？")          # stores the turn and each model's reply
    sandbox.flag(replies[0].id, "wrong language", "answered in English")
    sandbox.rate(s.id, 2)
    print(sandbox.model_stats())                            # error rate = flagged / agent turns
    python -m core.sandbox export SESSION_ID > session.jsonl
    python -m core.sandbox stats

Everything lives in the console database (core.store: sandbox_sessions, sandbox_messages,
flags), so sessions survive a reload and can be reopened and continued. In a session
with two models the user's messages are stored once (model NULL) and each model keeps
its own replies: a model's history is the user turns plus its own answers. The
session's context (what the agent knows: order, profile) is stored as a message with
role "context" so it travels with the session and its export.
"""
from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from core.redact import redact
from core.store import db, dumps, loads, now, transaction

FLAG_CATEGORIES = [
    "hallucination",
    "policy violation",
    "leaked internal information",
    "rude",
    "wrong language",
    "failed to hand off to a human",
    "glitch/empty/repeat",
    "other",
]


class SandboxError(ValueError):
    """A bad sandbox request (unknown session, bad category, rating out of range)."""


@dataclass
class Flag:
    id: str
    message_id: str
    session_id: str
    model: str
    category: str
    comment: str
    created_at: float


@dataclass
class Message:
    id: str
    session_id: str
    seq: int
    role: str
    content: str
    model: str | None = None
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    created_at: float = 0.0
    flags: list[Flag] = field(default_factory=list)


@dataclass
class Session:
    id: str
    models: list[str]
    customer: str | None
    title: str
    rating: int | None
    tester: str
    created_at: float
    updated_at: float
    context: dict | None = None

    @property
    def label(self) -> str:
        """One line for a picker: title · models · customer · rating · short id (labels never collide)."""
        stars = f" · {'★' * self.rating}" if self.rating else ""
        who = f" · {self.customer}" if self.customer else ""
        return f"{self.title} · {' vs '.join(self.models)}{who}{stars} · #{self.id[:6]}"


def _id() -> str:
    return uuid.uuid4().hex[:12]


def default_title(tester: str, t: float) -> str:
    """A session's name when none is given: who and when (UTC), e.g. 'ana · 2026-11-29 11:40'."""
    return f"{tester.strip() or 'anonymous'} · {time.strftime('%Y-%m-%d %H:%M', time.gmtime(t))}"


# ---------------------------------------------------------------- sessions

def create_session(models: list[str], customer: str | None = None, tester: str = "",
                   title: str = "", context: dict | None = None) -> Session:
    """Start a session with one or two models (the same user messages go to each)."""
    models = [m for m in models if m]
    if not 1 <= len(models) <= 2 or len(set(models)) != len(models):
        raise SandboxError("pick one model, or two different models to compare")
    t = now()
    row = {"id": _id(), "models": dumps(models), "customer": customer or None,
           "title": title.strip() or default_title(tester, t), "rating": None, "tester": tester or "", "created_at": t,
           "updated_at": t}
    database = db()
    with transaction(database):
        database["sandbox_sessions"].insert(row)
        if context:
            database["sandbox_messages"].insert(_message_row(row["id"], 0, "context", dumps(context)))
    return get_session(row["id"])


def get_session(session_id: str) -> Session:
    database = db()
    rows = list(database["sandbox_sessions"].rows_where("id = ?", [session_id]))
    if not rows:
        raise SandboxError(f"unknown sandbox session '{session_id}'")
    ctx = database.execute("select content from sandbox_messages where session_id = ? and role = 'context' "
                           "order by seq desc limit 1", [session_id]).fetchone()
    return _session(rows[0], loads(ctx[0]) if ctx else None)


def _session(row: dict, context: dict | None = None) -> Session:
    return Session(id=row["id"], models=loads(row["models"], []), customer=row["customer"],
                   title=row["title"] or "untitled", rating=row["rating"], tester=row["tester"] or "",
                   created_at=row["created_at"], updated_at=row["updated_at"], context=context)


def list_sessions(limit: int = 100) -> list[Session]:
    """Most recently used first."""
    rows = db()["sandbox_sessions"].rows_where(order_by="updated_at desc", limit=limit)
    return [_session(r) for r in rows]


def rate(session_id: str, rating: int) -> None:
    """Rate the whole session 1 (broken) to 5 (flawless)."""
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise SandboxError("rating must be an integer from 1 to 5")
    get_session(session_id)
    database = db()
    with transaction(database):
        database["sandbox_sessions"].update(session_id, {"rating": rating, "updated_at": now()})


# ---------------------------------------------------------------- messages

def _message_row(session_id: str, seq: int, role: str, content: str, model: str | None = None,
                 completion: Any = None) -> dict:
    row = {"id": _id(), "session_id": session_id, "model": model, "seq": seq, "role": role,
           "content": redact(content), "latency_s": 0.0, "input_tokens": 0, "output_tokens": 0,
           "cost_usd": 0.0, "error": None, "created_at": now()}
    if completion is not None:
        row.update(latency_s=completion.latency_s, input_tokens=completion.input_tokens,
                   output_tokens=completion.output_tokens, cost_usd=completion.cost_usd,
                   error=redact(completion.error))
    return row


def _next_seq(database: Any, session_id: str) -> int:
    """The next number, read under the write lock: BEGIN IMMEDIATE makes read + insert one step."""
    if not database.conn.in_transaction:
        database.execute("BEGIN IMMEDIATE")
    row = database.execute("select coalesce(max(seq), 0) from sandbox_messages where session_id = ?",
                           [session_id]).fetchone()
    return int(row[0]) + 1


def add_message(session_id: str, role: str, content: str, model: str | None = None,
                completion: Any = None) -> Message:
    """Store one message; an agent reply carries its Completion (latency, tokens, cost, error)."""
    if role not in ("user", "assistant", "system", "tool"):  # tool: a call and its result (core.tool_sandbox)
        raise SandboxError(f"role must be user, assistant, system or tool, not {role!r}")
    get_session(session_id)
    database = db()
    with transaction(database):
        row = _message_row(session_id, _next_seq(database, session_id), role, content, model, completion)
        database["sandbox_messages"].insert(row)
        database["sandbox_sessions"].update(session_id, {"updated_at": row["created_at"]})
    return Message(**{k: row[k] for k in Message.__dataclass_fields__ if k in row})


def add_user_message(session_id: str, text: str) -> Message:
    """Store a tester's message; a blank one is refused (it would only waste a model call)."""
    if not (text or "").strip():
        raise SandboxError("the message is empty: type something to send")
    return add_message(session_id, "user", text.strip())


# A reply cut short by something other than the tester's Stop (a reload, another page, another
# click): kept as it was shown, but it does not answer the message, which the page offers to retry.
INTERRUPTED = "interrupted before the end (the page reloaded or changed)"


def _replies_to_last(session_id: str) -> tuple[Message | None, list[Message]]:
    msgs = messages(session_id)
    last_user = next((m for m in reversed(msgs) if m.role == "user"), None)
    if last_user is None:
        return None, []
    return last_user, [m for m in msgs if m.role == "assistant" and m.seq > last_user.seq]


def pending(session_id: str, *, interrupted_count: bool = False) -> dict[str, Message]:
    """model -> the last user message it has not answered (e.g. the page switched mid-call); an
    INTERRUPTED reply is no answer unless `interrupted_count`."""
    last_user, replies = _replies_to_last(session_id)
    if last_user is None:
        return {}
    answered = {m.model for m in replies if interrupted_count or m.error != INTERRUPTED}
    return {model: last_user for model in get_session(session_id).models if model not in answered}


def relabel_last_replies(session_id: str, old_error: str, new_error: str) -> int:
    """Give the replies to the last user message whose error is `old_error` the error `new_error`
    (e.g. INTERRUPTED -> stopped once the page knows it was the tester's Stop); returns how many."""
    _, replies = _replies_to_last(session_id)
    database = db()
    with transaction(database):
        for m in replies:
            if m.error == old_error:
                database["sandbox_messages"].update(m.id, {"error": new_error})
    return sum(1 for m in replies if m.error == old_error)


def add_reply(session_id: str, model: str, completion: Any) -> Message:
    """Store an agent reply; a failed call is stored too (it is a glitch testers can flag)."""
    return add_message(session_id, "assistant", completion.text, model=model, completion=completion)


def messages(session_id: str) -> list[Message]:
    """All chat messages of a session in order, each with its flags (context excluded)."""
    database = db()
    flags: dict[str, list[Flag]] = {}
    for f in database["flags"].rows_where("session_id = ?", [session_id], order_by="created_at"):
        flags.setdefault(f["message_id"], []).append(Flag(**f))
    rows = database["sandbox_messages"].rows_where("session_id = ? and role != 'context'", [session_id],
                                                   order_by="seq")
    return [Message(**row, flags=flags.get(row["id"], [])) for row in rows]


def transcript(session_id: str, model: str) -> list[Message]:
    """What one model saw and said: user turns plus its own replies."""
    return [m for m in messages(session_id) if m.role in ("user", "system") or m.model == model]


def history(session_id: str, model: str) -> list[dict]:
    """OpenAI-style messages for the next call to `model` (failed replies left out)."""
    return [{"role": m.role, "content": m.content} for m in transcript(session_id, model)
            if m.role != "tool" and not (m.role == "assistant" and m.error)]


def ask(session_id: str, text: str, **call: Any) -> list[Message]:
    """Store the user's message, call every model of the session at once, store and return the replies."""
    from core.sandbox_replies import reply

    add_user_message(session_id, text)
    return reply(session_id, **call)


# ---------------------------------------------------------------- flags

def flag(message_id: str, category: str, comment: str = "") -> Flag:
    """Mark an agent reply as broken in one of FLAG_CATEGORIES, with a comment."""
    if category not in FLAG_CATEGORIES:
        raise SandboxError(f"unknown flag category {category!r}; use one of: {', '.join(FLAG_CATEGORIES)}")
    database = db()
    rows = list(database["sandbox_messages"].rows_where("id = ?", [message_id]))
    if not rows or rows[0]["role"] != "assistant":
        raise SandboxError("only an agent reply can be flagged")
    msg = rows[0]
    f = Flag(id=_id(), message_id=message_id, session_id=msg["session_id"], model=msg["model"] or "",
             category=category, comment=comment.strip(), created_at=now())
    with transaction(database):
        database["flags"].insert(asdict(f))
        database["sandbox_sessions"].update(msg["session_id"], {"updated_at": f.created_at})
    return f


def unflag(flag_id: str) -> None:
    database = db()
    with transaction(database):
        database["flags"].delete_where("id = ?", [flag_id])


# ---------------------------------------------------------------- stats and export

STATS_SQL = """
select m.model as model,
       count(distinct m.session_id) as sessions,
       count(*) as agent_turns,
       count(distinct f.message_id) as flagged_turns,
       sum(case when m.error is not null then 1 else 0 end) as call_errors,
       avg(m.latency_s) as mean_latency_s,
       sum(m.input_tokens) as input_tokens,
       sum(m.output_tokens) as output_tokens,
       sum(m.cost_usd) as cost_usd
from sandbox_messages m
left join (select distinct message_id from flags) f on f.message_id = m.id
where m.role = 'assistant'
group by m.model
order by m.model
"""


def model_stats() -> list[dict]:
    """Per model: sessions, agent turns, flagged turns, error rate (flagged / agent turns), by category."""
    database = db()
    stats = [dict(zip(("model", "sessions", "agent_turns", "flagged_turns", "call_errors", "mean_latency_s",
                       "input_tokens", "output_tokens", "cost_usd"), row))
             for row in database.execute(STATS_SQL).fetchall()]
    by_cat: dict[str, dict[str, int]] = {}
    for model, category, n in database.execute(
            "select model, category, count(*) from flags group by model, category").fetchall():
        by_cat.setdefault(model, {})[category] = n
    for s in stats:
        s["error_rate"] = s["flagged_turns"] / s["agent_turns"] if s["agent_turns"] else 0.0
        s["by_category"] = {c: by_cat.get(s["model"], {}).get(c, 0) for c in FLAG_CATEGORIES
                            if by_cat.get(s["model"], {}).get(c)}
    return stats


def export_records(session_id: str) -> Iterator[dict]:
    """The session header, then one record per message (with flags), for JSONL."""
    session = get_session(session_id)
    yield {"type": "session", **asdict(session)}
    for m in messages(session_id):
        yield {"type": "message", **asdict(m)}


def export_jsonl(session_id: str) -> str:
    """A session as JSONL: a header line, then one line per message with its flags."""
    return "".join(dumps(r) + "\n" for r in export_records(session_id))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"] and len(argv) == 2:
        sys.stdout.write(export_jsonl(argv[1]))
        return 0
    if argv[:1] == ["stats"]:
        for s in model_stats():
            print(f"{s['model']}: {s['sessions']} sessions, {s['agent_turns']} turns, "
                  f"{s['flagged_turns']} flagged ({s['error_rate']:.0%}) {s['by_category']}")
        return 0
    if argv[:1] == ["list"]:
        for s in list_sessions():
            print(s.id, s.label)
        return 0
    print("usage: python -m core.sandbox list | stats | export SESSION_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
