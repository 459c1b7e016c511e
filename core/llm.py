"""One way to call any model: registry names, LiteLLM model strings, local models, URLs.

    from core import llm
    c = llm.chat("smollm2-135m", [{"role": "user", "content": "Hi"}])
    print(c.text, c.input_tokens, c.output_tokens, c.latency_s, c.cost_usd, c.error)

    python -m core.llm smollm2-135m "Where is my parcel?" [--customer shop_zh] [--stream]

`model` may be
  - a registry name (registry.yaml); a `prompt` entry renders its prompt_template with
    {context} {history} {question} {policy} (policy = customers/<customer>/prompt.md)
    into the system message and calls its base model;
  - a LiteLLM model string, e.g. "gemini/gemini-2.5-flash" (key from GEMINI_API_KEY);
  - "local/<registry name or folder>": transformers in this process (core.local_provider);
  - an OpenAI-compatible base URL, e.g. "http://127.0.0.1:8000/v1" (append
    "#served-name" when the server wants a particular model name).
Every call returns a Completion; failures (missing key, unreachable host, timeout, HTTP
500, rate limit, bad response) come back as Completion.error, a one-line message, never
an exception. `timeout` bounds the whole call including retries.
Importing this module is cheap; litellm (about 6 s) and torch load on the first call.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from core.local_targets import EMBEDDED_MODEL, embedded_available  # noqa: F401  (re-exported)
from core.paths import CUSTOMERS_DIR

ENDPOINT_KEY_VAR = "CSFORGE_ENDPOINT_KEY"  # bearer key for OpenAI-compatible URLs, if they need one
RETRY_BACKOFF_S = (0.5, 1.5, 3.0)  # short: the caller's timeout covers the retries too


@dataclass
class Completion:
    """A model reply with what it cost; `error` is set (and text empty) when the call failed."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    error: str | None = None
    tool_calls: list[dict] | None = None  # chat_tools only: [{id, name, arguments}]

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Target:
    """A resolved call: what LiteLLM gets, with the messages after any prompt template."""

    litellm_model: str
    messages: list[dict]
    api_base: str | None = None
    api_key: str | None = None
    chain: list[str] = field(default_factory=list)  # registry names crossed, for messages

    @property
    def is_local(self) -> bool:
        return self.litellm_model.startswith("local/")


class CallError(Exception):
    """Raised inside this module only; chat() turns it into Completion.error."""


# ---------------------------------------------------------------- litellm, lazily

_LITELLM: Any = None
_LITELLM_LOCK = threading.Lock()


def _litellm() -> Any:
    """litellm, imported on first use with the `local` provider registered and no phoning home."""
    global _LITELLM
    if _LITELLM is None:
        with _LITELLM_LOCK:
            if _LITELLM is None:
                from core.litellm_env import import_litellm
                from core.local_provider import handler

                litellm = import_litellm()
                litellm.custom_provider_map = [
                    *[p for p in litellm.custom_provider_map if p.get("provider") != "local"],
                    {"provider": "local", "custom_handler": handler()},
                ]
                _LITELLM = litellm
    return _LITELLM


def load_local(name_or_path: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a local target, from the shared cache (the factory reuses it)."""
    from core import local_provider

    loaded = local_provider.load(name_or_path.removeprefix("local/"))
    return loaded.model, loaded.tokenizer


# ---------------------------------------------------------------- resolving a model name

def resolve(model: str, messages: list[dict], *, context: dict | None = None,
            customer: str | None = None) -> Target:
    """Follow registry names to a LiteLLM call; apply prompt templates on the way."""
    from core import registry

    chain: list[str] = []
    messages = [dict(m) for m in messages]
    name = model
    entries = registry.load().entries
    for _ in range(6):
        if name.startswith(("http://", "https://")):
            return _url_target(name, messages, context, chain)
        entry = entries.get(name)
        if entry is None and "/" in name:  # a LiteLLM model string such as gemini/gemini-2.5-flash
            return Target(name, _with_context(messages, context), chain=chain)
        if entry is None:
            known = ", ".join(entries) or "(registry is empty)"
            raise CallError(f"unknown model '{name}'; registry has: {known}")
        chain.append(entry.name)
        if entry.type == "prompt":
            messages = render_prompt(entry.prompt_template or "", messages, context,
                                     customer or entry.customer)
            context = None  # now inside the system prompt
            name = entry.base_model
        elif entry.access_point.startswith("local/") and entry.access_point[6:] == entry.name:
            return Target(entry.access_point, _with_context(messages, context), chain=chain)
        else:
            name = entry.access_point
    raise CallError(f"'{model}': registry chain too deep: {' -> '.join(chain)}")


def _url_target(url: str, messages: list[dict], context: dict | None, chain: list[str]) -> Target:
    base, _, served = url.partition("#")
    return Target(f"openai/{served or 'agent'}", _with_context(messages, context), api_base=base,
                  api_key=os.environ.get(ENDPOINT_KEY_VAR, "none"), chain=chain)


def format_context(context: dict | None) -> str:
    """Context as readable 'key: value' lines (small models read this better than JSON)."""
    if not context:
        return "(none)"
    lines = []
    for key, value in context.items():
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def _with_context(messages: list[dict], context: dict | None) -> list[dict]:
    """Models without a template still see the context, as a system message."""
    if not context:
        return messages
    note = "Context (what the agent knows about this conversation):\n" + format_context(context)
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def policy_text(customer: str | None) -> str:
    """customers/<customer>/prompt.md, or "" when there is none."""
    if not customer:
        return ""
    path = (CUSTOMERS_DIR / customer / "prompt.md").resolve()
    if path.parent.parent != CUSTOMERS_DIR.resolve():  # "../x" or an absolute path: never read outside
        raise CallError(f"customer must be a customer folder name, got {customer[:80]!r}")
    return path.read_text(encoding="utf-8").strip() if path.exists() else ""


HISTORY_POINTER = "(the conversation so far follows as messages)"
QUESTION_POINTER = "(the customer's last message, below)"


def render_prompt(template: str, messages: list[dict], context: dict | None,
                  customer: str | None) -> list[dict]:
    """[system: the template with policy and context (+ caller's system notes), then the turns].

    The conversation stays real messages and the system message only changes when the
    policy or the context does, so every turn of a chat starts with the same tokens and a
    local model reuses their KV cache ({history} and {question} point at the messages).
    """
    system_notes = [m["content"] for m in messages if m.get("role") == "system" and m.get("content")]
    turns = [{"role": m["role"], "content": m.get("content") or ""} for m in messages
             if m.get("role") in ("user", "assistant")]
    values = {"{context}": format_context(context), "{history}": HISTORY_POINTER,
              "{question}": QUESTION_POINTER, "{policy}": policy_text(customer)}
    # str.replace, not str.format: templates may contain JSON braces.
    system = re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], template)
    system = "\n\n".join([system.strip(), *system_notes])
    return [{"role": "system", "content": system}, *turns]


# ---------------------------------------------------------------- errors

def _missing_key(target: Target) -> str | None:
    if target.is_local or target.api_base:
        return None
    from core import registry

    var = registry.provider_key(target.litellm_model)
    if var:
        return None if os.environ.get(var) else f"set {var}"
    info = _litellm().validate_environment(model=target.litellm_model)
    missing = info.get("missing_keys") or []
    return ("set " + ", ".join(missing)) if missing else None


def _one_line(text: str, limit: int = 240) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip()
    # litellm prefixes: "litellm.InternalServerError: InternalServerError: OpenAIException - ..."
    text = re.sub(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?", "", text)
    return text[:limit] + ("…" if len(text) > limit else "")


def explain(exc: BaseException, target: Target, timeout: float) -> str:
    """A clear one-line message for a failed call (the caller shows or records it)."""
    name = type(exc).__name__
    where = target.api_base or target.litellm_model
    msg = _one_line(getattr(exc, "message", None) or str(exc))
    status = getattr(exc, "status_code", None)
    if isinstance(exc, CallError) or name == "LocalModelError":
        return msg
    if "Timeout" in name or "timed out" in msg.lower():
        return f"timed out after {timeout:g}s waiting for {where}"
    if _is_bad_json(msg):
        return f"bad response from {where}: not valid JSON ({msg.split(',')[0]})"
    if name == "APIConnectionError" or "connection error" in msg.lower():
        return f"cannot reach {where}: connection failed (is the server running?)"
    if name == "RateLimitError" or status == 429:
        return f"rate limited by {where} (429): {msg}"
    if name == "AuthenticationError" or status == 401:
        return f"authentication failed for {where} (401): check the API key: {msg}"
    if status and int(status) >= 500:
        return f"server error {status} from {where}: {msg}"
    if status:
        return f"{name} ({status}) from {where}: {msg}"
    return f"{name} from {where}: {msg}"


def _is_bad_json(msg: str) -> bool:
    return "Expecting value" in msg or "JSONDecodeError" in msg or "Invalid JSON" in msg


def _retryable(exc: BaseException) -> bool:
    if _is_bad_json(str(exc)):  # asking again gets the same broken body
        return False
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    return name in ("RateLimitError", "APIConnectionError", "ServiceUnavailableError",
                    "InternalServerError") or (status is not None and int(status) in (429, 500, 502, 503))


# ---------------------------------------------------------------- calling

def _params(target: Target, temperature: float, max_tokens: int, timeout: float, seed: int | None) -> dict:
    params: dict[str, Any] = dict(model=target.litellm_model, messages=target.messages,
                                  temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                                  num_retries=0, max_retries=0, drop_params=True)
    if seed is not None:
        params["seed"] = seed
    if target.api_base:
        params.update(api_base=target.api_base, api_key=target.api_key)
    return params


def _cost(litellm: Any, response: Any, target: Target) -> float:
    if target.is_local or target.api_base:
        return 0.0  # local compute is recorded as latency; an outside agent prices itself
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # a model missing from the cost map costs "unknown", recorded as 0
        return 0.0


def _back_off(attempt: int, left: float) -> None:
    """Wait before a retry (none before the first try), never past the time left."""
    if attempt:
        time.sleep(min(RETRY_BACKOFF_S[min(attempt - 1, 2)], max(left - 0.5, 0)))


def _attempts(timeout: float, retries: int) -> Iterator[tuple[int, float]]:
    """(attempt number, seconds left) while the overall deadline allows another attempt."""
    deadline = time.monotonic() + timeout
    for attempt in range(retries + 1):
        left = deadline - time.monotonic()
        if left <= 0.05:
            return
        yield attempt, left


def _prepare(model: str, messages: list[dict], context: dict | None, customer: str | None,
             start: float) -> tuple[Target | None, Completion | None]:
    try:
        target = resolve(model, messages, context=context, customer=customer)
        missing = _missing_key(target)
    except CallError as exc:
        return None, Completion("", model, latency_s=time.perf_counter() - start, error=str(exc))
    except Exception as exc:  # a broken registry file, an unknown provider
        return None, Completion("", model, latency_s=time.perf_counter() - start,
                                error=f"cannot route '{model}': {_one_line(str(exc))}")
    if missing:
        return None, Completion("", model, error=f"{model}: API key missing: {missing}")
    return target, None


def chat(model: str, messages: list[dict], *, context: dict | None = None, customer: str | None = None,
         temperature: float = 0.0, max_tokens: int = 256, timeout: float = 60, seed: int | None = 0,
         retries: int = 2) -> Completion:
    """Call a model once; never raises for a model/provider/network failure.

    A local model is called in-process without LiteLLM (no 6 s import for the embedded
    default); core.serve ends one early (a client gone) through `local_provider.STOP`.
    """
    start = time.perf_counter()
    target, failed = _prepare(model, messages, context, customer, start)
    if failed:
        return failed
    if target.is_local:
        return _local_chat(model, target, start, temperature=temperature, max_tokens=max_tokens,
                           timeout=timeout, seed=seed)
    litellm = _litellm()
    start = time.perf_counter()  # litellm's first import is not the model's latency
    error = f"timed out after {timeout:g}s"
    for attempt, left in _attempts(timeout, retries):
        if attempt:
            _back_off(attempt, left)
            left = timeout - (time.perf_counter() - start)
            if left <= 0.05:
                break
        try:
            resp = litellm.completion(**_params(target, temperature, max_tokens, left, seed))
            usage = getattr(resp, "usage", None)
            return Completion(
                text=(resp.choices[0].message.content or "").strip(), model=model,
                input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                latency_s=time.perf_counter() - start, cost_usd=_cost(litellm, resp, target))
        except Exception as exc:
            error = explain(exc, target, timeout)
            if not _retryable(exc):
                break
    return Completion("", model, latency_s=time.perf_counter() - start, error=error)


def stream_chat(model: str, messages: list[dict], *, context: dict | None = None,
                customer: str | None = None, temperature: float = 0.0, max_tokens: int = 256,
                timeout: float = 60, seed: int | None = 0, retries: int = 2) -> Iterator[str | Completion]:
    """Yield text pieces as they arrive; the last item is the Completion (full text, usage)."""
    start = time.perf_counter()
    target, failed = _prepare(model, messages, context, customer, start)
    if failed:
        yield failed
        return
    if target.is_local:
        yield from _local_stream(model, target, start, temperature=temperature, max_tokens=max_tokens,
                                 timeout=timeout, seed=seed)
        return
    litellm = _litellm()
    start = time.perf_counter()
    pieces: list[str] = []
    usage: Any = None
    error = f"timed out after {timeout:g}s"
    for attempt, left in _attempts(timeout, retries):
        _back_off(attempt, left)
        try:
            params = _params(target, temperature, max_tokens, timeout - (time.perf_counter() - start), seed)
            for chunk in litellm.completion(**params, stream=True, stream_options={"include_usage": True}):
                usage = getattr(chunk, "usage", None) or usage
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    pieces.append(delta)
                    yield delta
            error = None
            break
        except Exception as exc:
            error = explain(exc, target, timeout)
            if pieces or not _retryable(exc):  # never replay a half-shown reply
                break
    text = "".join(pieces).strip()
    n_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    n_out = int(getattr(usage, "completion_tokens", 0) or 0)
    if error is None and not usage:
        n_in, n_out = _count_tokens(litellm, target, text)
    cost = 0.0 if error or target.is_local or target.api_base else _stream_cost(litellm, target, n_in, n_out)
    yield Completion(text if error is None else "", model, n_in, n_out, time.perf_counter() - start,
                     cost, error)


# ---------------------------------------------------------------- local models, in-process

def _local_chat(model: str, target: Target, start: float, **options: Any) -> Completion:
    from core import local_provider as lp

    try:
        loaded = lp.load(target.litellm_model.removeprefix("local/"))
        text, n_in, n_out = lp.generate(loaded, target.messages, **options)
    except Exception as exc:  # a missing folder, a broken adapter: a recorded failure
        return Completion("", model, latency_s=time.perf_counter() - start,
                          error=explain(exc, target, options["timeout"]))
    return Completion(text, model, n_in, n_out, time.perf_counter() - start)


def _local_stream(model: str, target: Target, start: float, **options: Any) -> Iterator[str | Completion]:
    from core import local_provider as lp

    pieces: list[str] = []
    n_in = n_out = 0
    try:
        loaded = lp.load(target.litellm_model.removeprefix("local/"))
        for item in lp.stream(loaded, target.messages, **options):
            if isinstance(item, str):
                pieces.append(item)
                yield item
            else:
                n_in, n_out = item
    except Exception as exc:
        yield Completion("", model, latency_s=time.perf_counter() - start,
                         error=explain(exc, target, options["timeout"]))
        return
    yield Completion("".join(pieces).strip(), model, n_in, n_out, time.perf_counter() - start)


def _count_tokens(litellm: Any, target: Target, text: str) -> tuple[int, int]:
    try:
        return (litellm.token_counter(model=target.litellm_model, messages=target.messages),
                litellm.token_counter(model=target.litellm_model, text=text))
    except Exception:
        return 0, 0


def _stream_cost(litellm: Any, target: Target, n_in: int, n_out: int) -> float:
    try:
        prompt, completion = litellm.cost_per_token(model=target.litellm_model, prompt_tokens=n_in,
                                                    completion_tokens=n_out)
        return float(prompt + completion)
    except Exception:
        return 0.0


# ---------------------------------------------------------------- tools (function calling)

TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def chat_tools(model: str, messages: list[dict], tools: list[dict], *, customer: str | None = None,
               temperature: float = 0.0, max_tokens: int = 512, timeout: float = 60, seed: int | None = 0,
               retries: int = 2) -> Completion:
    """chat() with OpenAI tools; `tool_calls` lists the calls ({id, name, arguments}), [] for a text reply.

    Providers and URLs get native function calling (`tools`); a prompt model or a local model
    gets the tools in its system prompt and answers <tool_call>{"name": .., "arguments": {..}}</tool_call>.
    """
    if _text_protocol(model):
        done = chat(model, tools_as_text(messages, tools), customer=customer, temperature=temperature,
                    max_tokens=max_tokens, timeout=timeout, seed=seed, retries=retries)
        done.tool_calls = parse_tool_calls(done.text) if done.ok else []
        if done.tool_calls:
            done.text = TOOL_CALL.sub("", done.text).strip() if TOOL_CALL.search(done.text) else ""
        return done
    litellm = _litellm()
    start = time.perf_counter()
    target, failed = _prepare(model, messages, None, customer, start)
    if failed:
        return failed
    error = f"timed out after {timeout:g}s"
    for attempt, left in _attempts(timeout, retries):
        _back_off(attempt, left)
        try:
            params = _params(target, temperature, max_tokens, timeout - (time.perf_counter() - start), seed)
            resp = litellm.completion(**params, tools=tools, tool_choice="auto")
            msg, usage = resp.choices[0].message, getattr(resp, "usage", None)
            calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                     for c in (getattr(msg, "tool_calls", None) or [])]
            return Completion((msg.content or "").strip(), model, int(getattr(usage, "prompt_tokens", 0) or 0),
                              int(getattr(usage, "completion_tokens", 0) or 0), time.perf_counter() - start,
                              _cost(litellm, resp, target), tool_calls=calls)
        except Exception as exc:
            error = explain(exc, target, timeout)
            if not _retryable(exc):
                break
    return Completion("", model, latency_s=time.perf_counter() - start, error=error, tool_calls=[])


def _text_protocol(model: str) -> bool:
    """True for models reached through a prompt template or in-process transformers."""
    if model.startswith(("http://", "https://")):
        return False
    from core import registry

    entries, name = registry.load().entries, model
    for _ in range(6):
        if name.startswith("local/"):
            return True
        entry = entries.get(name)
        if entry is None:
            return False
        if entry.type == "prompt" or entry.access_point.startswith("local/"):
            return True
        name = entry.access_point
    return False


def tools_as_text(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Tool schemas in the system prompt, tool calls and results as plain turns."""
    lines = ["You can call these tools:"]
    for t in tools:
        fn = t["function"]
        args = ", ".join(f"{k} ({v.get('type', 'any')})" for k, v in fn["parameters"]["properties"].items())
        lines.append(f"- {fn['name']}({args}): {fn['description'].splitlines()[0]}")
    lines.append('To call one, answer with only <tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>. '
                 "Otherwise answer the customer.")
    note = "\n".join(lines)
    from core.tool_turns import as_text

    out = [dict(m) for m in as_text(messages)]
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{note}"}
    else:
        out.insert(0, {"role": "system", "content": note})
    return out


def parse_tool_calls(text: str) -> list[dict]:
    """<tool_call>{...}</tool_call> blocks, or a reply that is one JSON object with a name."""
    blocks = TOOL_CALL.findall(text or "") or ([text.strip()] if (text or "").strip().startswith("{") else [])
    calls = []
    for n, block in enumerate(blocks):
        try:
            data = json.loads(block)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            calls.append({"id": f"call_{n}", "name": data["name"], "arguments": data.get("arguments") or {}})
    return calls


# ---------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Call one model once and print the reply and usage.")
    ap.add_argument("model")
    ap.add_argument("message")
    ap.add_argument("--customer")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--stream", action="store_true")
    args = ap.parse_args(argv)
    msgs = [{"role": "user", "content": args.message}]
    if args.stream:
        for item in stream_chat(args.model, msgs, customer=args.customer, max_tokens=args.max_tokens):
            if isinstance(item, str):
                print(item, end="", flush=True)
            else:
                result = item
        print()
    else:
        result = chat(args.model, msgs, customer=args.customer, max_tokens=args.max_tokens)
        print(result.text)
    print(f"-- {result.input_tokens} in, {result.output_tokens} out, {result.latency_s:.2f}s, "
          f"${result.cost_usd:.6f}" + (f", error: {result.error}" if result.error else ""), file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
