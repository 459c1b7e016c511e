"""Serve any registry model as an OpenAI-compatible endpoint.

    python -m core.serve smollm2-135m --port 8000 [--host 127.0.0.1] [--threads 4] [--no-warmup]
    curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
         -d '{"messages": [{"role": "user", "content": "Hi"}]}'

Routes: POST /v1/chat/completions (JSON, or Server-Sent Events with "stream": true),
GET /v1/models, GET /health. Calls go through `core.llm`, so a prompt model gets its
template and a fine-tuned entry its adapter. Two extensions to the OpenAI body:
"customer" (whose policy a prompt model uses) and "context" (a dict: what the agent
knows). Bad requests get OpenAI-style error JSON: {"error": {"message", "type", "param",
"code"}}; a failed model call is a 502 with the reason (no retries here: the
caller retries, so retries do not multiply). Runs on waitress (threads share
the one loaded model; core.llm serialises generate per model).
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any, Iterator

ROLES = {"system", "user", "assistant", "tool"}


def _error(message: str, status: int = 400, type_: str = "invalid_request_error",
           param: str | None = None, code: str | None = None) -> Any:
    from flask import jsonify

    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return jsonify(body), status


def _validate(body: Any) -> tuple[dict | None, Any]:
    """(call options, None) for a good body, else (None, an error response)."""
    if not isinstance(body, dict):
        return None, _error("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, _error("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return None, _error(f"messages[{i}].role must be one of {sorted(ROLES)}", param=f"messages.{i}.role")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return None, _error(f"messages[{i}].content must be a string", param=f"messages.{i}.content")
        messages[i] = {"role": m["role"], "content": content}
    opts: dict[str, Any] = {"messages": messages}
    for key, kind, default in (("temperature", (int, float), 0.0), ("max_tokens", int, 256),
                               ("seed", int, 0)):
        value = body.get(key, default)
        if key == "max_tokens" and value is None:
            value = body.get("max_completion_tokens") or default
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return None, _error(f"'{key}' must be a number", param=key)
        opts[key] = value
    if opts["max_tokens"] is not None and not 1 <= opts["max_tokens"] <= 8192:
        return None, _error("'max_tokens' must be between 1 and 8192", param="max_tokens")
    if body.get("context") is not None and not isinstance(body["context"], dict):
        return None, _error("'context' must be an object", param="context")
    opts["context"] = body.get("context")
    opts["customer"] = body.get("customer")
    return opts, None


def _usage(c: Any) -> dict:
    return {"prompt_tokens": c.input_tokens, "completion_tokens": c.output_tokens,
            "total_tokens": c.input_tokens + c.output_tokens}


def _sse_events(model_name: str, events: Iterator[Any], include_usage: bool) -> Iterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for item in events:
        if isinstance(item, str):
            yield chunk({"content": item})
            continue
        if item.error:  # headers are sent already: report the failure in-band, OpenAI style
            err = {"error": {"message": item.error, "type": "upstream_error", "param": None, "code": None}}
            yield f"data: {json.dumps(err, ensure_ascii=False)}\n\n"
        else:
            extra = {"usage": _usage(item)} if include_usage else {}
            yield chunk({}, "stop", **extra)
    yield "data: [DONE]\n\n"


def make_app(model_name: str) -> Any:
    """The Flask app serving one model (tests mount it on a free port)."""
    from flask import Flask, Response, jsonify, request

    from core import llm

    app = Flask(f"csforge-serve-{model_name}")

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok", "model": model_name})

    @app.get("/v1/models")
    def models() -> Any:
        return jsonify({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "csforge"}]})

    @app.post("/v1/chat/completions")
    def completions() -> Any:
        body = request.get_json(force=True, silent=True)
        if body is None:
            return _error("request body is not valid JSON")
        opts, err = _validate(body)
        if err is not None:
            return err
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = llm.stream_chat(model_name, **opts, retries=0)
            return Response(_sse_events(model_name, events, include_usage), mimetype="text/event-stream")
        c = llm.chat(model_name, **opts, retries=0)
        if c.error:
            return _error(c.error, 502, "upstream_error")
        return jsonify({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": c.text}}],
            "usage": _usage(c), "csforge": {"latency_s": round(c.latency_s, 4), "cost_usd": c.cost_usd},
        })

    @app.errorhandler(404)
    def not_found(_: Any) -> Any:
        return _error(f"unknown route {request.path}", 404, code="not_found")

    @app.errorhandler(405)
    def bad_method(_: Any) -> Any:
        return _error(f"method {request.method} not allowed on {request.path}", 405)

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return _error(exc.description or exc.name, exc.code or 400)
        return _error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                      500, "server_error")

    return app


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core import registry

    ap = argparse.ArgumentParser(description="Serve a registry model as an OpenAI-compatible API.")
    ap.add_argument("name", help="registry name (python -m core.registry list)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--no-warmup", action="store_true", help="skip the one-token call that loads the model")
    args = ap.parse_args(argv)
    try:
        registry.get(args.name)
    except registry.UnknownModel as exc:
        print(exc, file=sys.stderr)
        return 2
    ok, why = registry.availability(args.name)
    if not ok:
        print(f"warning: {args.name} is not available: {why}", file=sys.stderr)
    if not args.no_warmup:  # load litellm and the model now, not on the first client's request
        from core import llm

        warm = llm.chat(args.name, [{"role": "user", "content": "Hi"}], max_tokens=1, retries=0)
        print(f"warm-up: {'ok' if warm.ok else warm.error} ({warm.latency_s:.1f}s)", flush=True)
    from waitress import serve

    print(f"serving {args.name} at http://{args.host}:{args.port}/v1", flush=True)
    serve(make_app(args.name), host=args.host, port=args.port, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
