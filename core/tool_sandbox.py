"""Tool-sandbox conversations saved as sandbox sessions (core.sandbox) with their tool calls.

    s, trial = tool_sandbox.start("shop_zh", "@oracle", task_id="zh-quality-refund", tester="ana")
    tool_sandbox.send(s.id, trial, "杯子有裂纹")       # stores the user turn, each tool call, the reply
    trial = tool_sandbox.restore(s.id)                # reopened later: state rebuilt by replaying the calls

A tool session is an ordinary sandbox session whose context names the environment (and the
task it started from); each tool call is a message with role "tool" (JSON: name, arguments,
result, error) between the user turn and the agent's reply. Replies can be flagged, rated,
exported and turned into regression scenarios like any chat session. Reopening replays the
stored calls on a fresh copy of the environment's state, so the state diff is the same as it
was, without calling the agent again.
"""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from core import sandbox


def is_tool_session(session: sandbox.Session) -> bool:
    return bool((session.context or {}).get("environment"))


def start(customer: str, model: str, task_id: str | None = None, tester: str = "",
          title: str = "", trial: Any = None) -> tuple[sandbox.Session, Any]:
    """A new session on the client's environment and the live trial that plays it (given or fresh)."""
    from core.eval.tools_view import sandbox_trial

    trial = trial or sandbox_trial(customer, model, task_id)  # fails before anything is stored
    context = {"environment": customer, "task": task_id}
    session = sandbox.create_session([model], customer=customer, tester=tester,
                                     title=title or f"tools: {task_id or 'free play'}", context=context)
    return session, trial


def send(session_id: str, trial: Any, text: str) -> list[sandbox.Message]:
    """The tester's message, the agent's tool calls and its reply: played on `trial`, stored in the session."""
    model = sandbox.get_session(session_id).models[0]
    user = sandbox.add_user_message(session_id, text)
    first_new, glitches = len(trial.messages) + 1, len(trial.glitches)
    trial.messages.append({"role": "user", "content": user.content})
    turns_before = len(trial.turns)
    trial._agent_turn(user.content)
    stored = [user]
    results = {m.get("tool_call_id"): m for m in trial.messages[first_new:] if m["role"] == "tool"}
    for m in trial.messages[first_new:]:
        for call in m.get("tool_calls") or []:
            stored.append(sandbox.add_message(session_id, "tool", _call_json(call, results.get(call["id"]), trial),
                                              model=model))
    if len(trial.turns) > turns_before:
        turn = trial.turns[-1]
        error = next((g["message"] for g in trial.glitches[glitches:] if g["kind"] in ("error", "timeout")), None)
        done = SimpleNamespace(latency_s=turn["latency_s"], input_tokens=turn["input_tokens"],
                               output_tokens=turn["output_tokens"], cost_usd=turn["cost_usd"], error=error)
        stored.append(sandbox.add_message(session_id, "assistant", turn["reply"], model=model, completion=done))
    return stored


def _call_json(call: dict, result: dict | None, trial: Any) -> str:
    rec = next((c for c in reversed(trial.session.calls) if c["id"] == call["id"]), {})
    return json.dumps({"id": call["id"], "name": call["function"]["name"],
                       "arguments": json.loads(call["function"]["arguments"] or "{}"),
                       "result": (result or {}).get("content"), "error": bool(rec.get("error"))},
                      ensure_ascii=False)


def tool_call(message: sandbox.Message) -> dict:
    """A stored tool message decoded: id, name, arguments, result, error."""
    return json.loads(message.content)


def restore(session_id: str) -> Any:
    """A live trial in the state the session left: user turns, replies and the replayed tool calls."""
    from core.eval.tools_view import sandbox_trial

    session = sandbox.get_session(session_id)
    if not is_tool_session(session):
        raise sandbox.SandboxError(f"session {session_id} was not played on a tool environment")
    ctx = session.context
    trial = sandbox_trial(ctx["environment"], session.models[0], ctx.get("task"))
    for m in sandbox.messages(session_id):
        if m.role == "user":
            trial.messages.append({"role": "user", "content": m.content})
        elif m.role == "tool":
            call = tool_call(m)
            trial.messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function",
                 "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}}]})
            rec = trial.session.call(call["name"], call["arguments"], call["id"])
            trial.messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                                   "content": rec["result"]})
        elif m.role == "assistant" and not m.error:
            trial.messages.append({"role": "assistant", "content": m.content})
    return trial
