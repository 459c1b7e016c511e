"""Tool calls as conversation turns, for training examples.

A client's logs record tools two ways: OpenAI turns (an assistant message with `tool_calls`, then
`tool` messages with the results) or, in older logs, a list under context["tools"] of
{name, arguments, result} with no position. `with_tool_turns` turns the second kind into the
first: each call goes right before the first agent reply that follows the customer message in
which one of the call's argument values first appears (the call could only be made once the
agent knew its arguments); a call whose arguments never appear goes before the first agent reply.

`for_tokenizer` renders tool turns in the chat template's own tool format when the template
handles `tool_calls` (Qwen, Llama 3.1, ...); otherwise in the text protocol core.llm uses for such
models at inference (<tool_call>{...}</tool_call> from the agent, "Tool result (name): ..." back),
so a tuned model acts at inference the way it was taught. The message count never changes, so
per-message loss weights stay aligned.
"""
from __future__ import annotations

import json
from typing import Any


def argument_values(arguments: Any) -> list[str]:
    """The text values (3+ characters) of a tool call's arguments, nested ones included."""
    if isinstance(arguments, dict):
        return [v for x in arguments.values() for v in argument_values(x)]
    if isinstance(arguments, list):
        return [v for x in arguments for v in argument_values(x)]
    text = str(arguments).strip()
    return [text] if len(text) >= 3 else []


def _turns(calls: list[dict], start: int) -> list[dict]:
    out = []
    for n, call in enumerate(calls):
        cid = f"ctx_{start + n}"
        arguments = json.dumps(call.get("arguments") or {}, ensure_ascii=False)
        out.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": call.get("name", ""), "arguments": arguments}}]})
        result = call.get("result")
        out.append({"role": "tool", "tool_call_id": cid, "name": call.get("name", ""),
                    "content": result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)})
    return out


def with_tool_turns(dialog: list[dict], context_tools: list[dict] | None) -> list[dict]:
    """The dialog with context tool calls inserted as assistant tool-call turns plus results."""
    if not context_tools:
        return list(dialog)
    placed: dict[int, list[dict]] = {}
    first_reply = next((i for i, m in enumerate(dialog) if m["role"] == "assistant"), len(dialog))
    for call in context_tools:
        values = argument_values(call.get("arguments") or {})
        at = first_reply
        for i, m in enumerate(dialog):
            if m["role"] == "user" and any(v in (m.get("content") or "") for v in values):
                at = next((j for j in range(i + 1, len(dialog)) if dialog[j]["role"] == "assistant"), len(dialog))
                break
        placed.setdefault(at, []).append(call)
    out, made = [], 0
    for i in range(len(dialog) + 1):
        if i in placed:
            out += _turns(placed[i], made)
            made += len(placed[i])
        if i < len(dialog):
            out.append(dialog[i])
    return out


def template_has_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(str(t) for t in template.values())
    return "tool_calls" in str(template)


def as_text(messages: list[dict]) -> list[dict]:
    """Tool turns in core.llm's text protocol (same number of messages)."""
    out = []
    for m in messages:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"Tool result ({m.get('name', '')}): {m.get('content')}"})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            calls = [json.dumps({"name": c["function"]["name"], "arguments": _args(c["function"]["arguments"])},
                                ensure_ascii=False) for c in m["tool_calls"]]
            text = "\n".join(f"<tool_call>{c}</tool_call>" for c in calls)
            said = (m.get("content") or "").strip()
            out.append({"role": "assistant", "content": f"{said}\n{text}" if said else text})
        else:
            out.append(m)
    return out


def _args(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments or {}
    try:
        return json.loads(arguments or "{}")
    except ValueError:  # a model's malformed arguments stay as it wrote them
        return arguments


def for_tokenizer(tokenizer: Any, messages: list[dict]) -> list[dict]:
    """Messages ready for this tokenizer's chat template."""
    if not any(m["role"] == "tool" or m.get("tool_calls") for m in messages) or template_has_tools(tokenizer):
        return messages
    return as_text(messages)
