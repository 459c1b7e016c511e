"""Limits of `core.serve`: what a chat request may ask, and how many may wait for the model.

A request is checked in this order, each refusal naming the numbers:
  body size (413) -> JSON, at most MAX_MESSAGES messages, typed and ranged options (400)
  -> customer/model names (400/404) -> prompt tokens + max_tokens within the model's
  context (400, local models: counted with the model's own tokenizer and chat template)
  -> a place in the model's queue (503 + Retry-After when full).
A local model generates for one request at a time; `Gate` lets the others wait, up to the
queue size, for at most the request's own deadline, and lets go of anyone whose client left.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from core.guard import BadName, check_name, clip
from core.paths import CUSTOMERS_DIR

ROLES = {"system", "user", "assistant", "tool"}
URL_MODEL_ALIAS = "agent"  # what core.llm sends as the model name to a URL given without "#served-name"


@dataclass
class Limits:
    """Defaults sized for one small CPU model; `python -m core.serve --help` changes them."""

    max_body_bytes: int = 1_000_000  # ~250k tokens of text: far past any context we serve
    max_messages: int = 512  # a long support chat is tens of turns
    max_tokens: int = 8192
    timeout_s: float = 60.0  # per request, from arrival: waiting for the model included
    queue: int = 4  # requests admitted at once per model (one generating, the rest waiting)


class Refused(Exception):
    """A request the server will not run: HTTP status, message, the offending parameter."""

    def __init__(self, status: int, message: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after


# ---------------------------------------------------------------- the body

def parse_json(data: bytes) -> Any:
    """The request body as JSON; NaN/Infinity and pathological nesting are a 400, not a 500."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data, parse_constant=no_constant)
    except RecursionError:
        raise Refused(400, "request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"request body is not valid JSON: {str(exc)[:120]}") from None


def _content(i: int, content: Any) -> str:
    """A message's text: a string, or OpenAI content parts of type text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise Refused(400, f"messages[{i}].content must be a string or a list of text parts", f"messages.{i}.content")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type", "text") != "text" or not isinstance(part.get("text"), str):
            raise Refused(400, f"messages[{i}].content[{j}] must be {{'type': 'text', 'text': <string>}}; "
                               f"this server reads text only", f"messages.{i}.content.{j}")
        texts.append(part["text"])
    return "".join(texts)


def _messages(body: dict, limits: Limits) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refused(400, "'messages' must be a non-empty list", "messages")
    if len(messages) > limits.max_messages:
        raise Refused(400, f"{len(messages)} messages; this server accepts at most {limits.max_messages}", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Refused(400, f"messages[{i}].role must be one of {sorted(ROLES)}", f"messages.{i}.role")
        out.append({"role": m["role"], "content": _content(i, m.get("content"))})
    return out


def _number(body: dict, key: str, default: Any, kind: type, lo: float, hi: float) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    ok_type = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if not ok_type or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        raise Refused(400, f"'{key}' must be {'a number' if kind is float else 'an integer'}, got {clip(value)}", key)
    if not lo <= value <= hi:
        bounds = f"{lo:g} and {hi:g}" if kind is float else f"{int(lo)} and {int(hi)}"
        raise Refused(400, f"'{key}' must be between {bounds}, got {clip(value)}", key)
    return value


def validate(body: Any, model_name: str, limits: Limits) -> dict:
    """Call options for a good body; Refused (400/404) naming the field otherwise."""
    if not isinstance(body, dict):
        raise Refused(400, "request body must be a JSON object")
    model = body.get("model")
    if model not in (None, "", model_name, URL_MODEL_ALIAS):
        raise Refused(400, f"unknown model {clip(model)}; this server serves '{model_name}'", "model")
    opts: dict[str, Any] = {"messages": _messages(body, limits)}
    opts["temperature"] = _number(body, "temperature", 0.0, float, 0.0, 2.0)
    opts["seed"] = _number(body, "seed", 0, int, 0, 2**63 - 1)
    raw_max = body.get("max_tokens")
    if raw_max is None:
        raw_max = body.get("max_completion_tokens")
    opts["max_tokens"] = _number({"max_tokens": raw_max}, "max_tokens", 256, int, 1, limits.max_tokens)
    if body.get("context") is not None and not isinstance(body["context"], dict):
        raise Refused(400, "'context' must be an object", "context")
    opts["context"] = body.get("context")
    opts["customer"] = _customer(body.get("customer"))
    if not isinstance(body.get("stream", False), bool):
        raise Refused(400, f"'stream' must be true or false, got {clip(body.get('stream'))}", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict)
                                or not isinstance(options.get("include_usage", False), bool)):
        raise Refused(400, "'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    return opts


def known_customers() -> list[str]:
    return [d.name for d in CUSTOMERS_DIR.iterdir()
            if d.is_dir() and ((d / "prompt.md").exists() or (d / "dataset.py").exists())]


def _customer(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return check_name("customer", value, known_customers())
    except BadName as exc:
        raise Refused(400, str(exc), "customer") from None


# ---------------------------------------------------------------- the prompt against the context

def check_context(model_name: str, opts: dict) -> bool:
    """Refuse a prompt that cannot fit the model's context; True when the target runs locally."""
    from core import llm, local_provider

    try:
        target = llm.resolve(model_name, opts["messages"], context=opts["context"], customer=opts["customer"])
    except llm.CallError as exc:
        raise Refused(400, str(exc)) from None
    if not target.is_local:
        return False  # the provider or agent behind the URL enforces its own context
    try:
        loaded = local_provider.load(target.litellm_model.removeprefix("local/"))
    except local_provider.LocalModelError:
        return True  # the call itself reports it (502 with the reason)
    context = loaded.context
    if context:
        n = len(local_provider._prompt_ids(loaded.tokenizer, target.messages))
        if n + opts["max_tokens"] > context:
            raise Refused(400, f"prompt is {n} tokens and max_tokens is {opts['max_tokens']}: {n + opts['max_tokens']} "
                               f"> the model's context of {context} tokens; shorten the conversation",
                          "messages")
    return True


# ---------------------------------------------------------------- the queue

@dataclass
class Gate:
    """At most `size` requests admitted at once; with `serial`, one of them generates at a time."""

    size: int
    serial: bool = True
    admitted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    turn: threading.Lock = field(default_factory=threading.Lock)
    durations: deque = field(default_factory=lambda: deque(maxlen=20))

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead times a recent request's duration."""
        mean = sum(self.durations) / len(self.durations) if self.durations else 5.0
        ahead = self.admitted if self.serial else self.admitted / max(self.size, 1)
        return max(1, min(600, math.ceil(mean * max(ahead, 1))))

    def admit(self) -> "Ticket":
        with self.lock:
            if self.admitted >= self.size:
                raise Refused(503, f"model busy: {self.admitted} requests running or waiting (queue limit "
                                   f"{self.size}); retry later", retry_after=self.retry_after())
            self.admitted += 1
        return Ticket(self)

    def status(self) -> dict:
        return {"admitted": self.admitted, "limit": self.size}


class Ticket:
    """One admitted request: wait for the model's turn, then release both exactly once."""

    def __init__(self, gate: Gate):
        self.gate, self.started, self.has_turn, self.done = gate, time.monotonic(), False, False

    def wait_turn(self, deadline: float, gone: Callable[[], bool]) -> None:
        """Block until this request may generate; Refused 503 at the deadline or when the client left."""
        if not self.gate.serial:
            return
        while not self.gate.turn.acquire(timeout=0.1):
            if gone():
                raise Refused(499, "client closed the request")
            if time.monotonic() >= deadline:
                raise Refused(503, "timed out waiting for the model (the requests ahead took too long)",
                              retry_after=self.gate.retry_after())
        self.has_turn = True

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        if self.has_turn:
            self.gate.turn.release()
        with self.gate.lock:
            self.gate.admitted -= 1
            self.gate.durations.append(time.monotonic() - self.started)
