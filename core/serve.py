"""Serve any registry model as an OpenAI-compatible endpoint.

    python -m core.serve smollm2-135m --port 8000 [--host 127.0.0.1] [--threads 8] [--queue 4] [--no-warmup]
    curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
         -d '{"messages": [{"role": "user", "content": "Hi"}]}'

Routes: POST /v1/chat/completions (JSON, or Server-Sent Events with "stream": true),
GET /v1/models, GET /health. Calls go through `core.llm`, so a prompt model gets its
template and a fine-tuned entry its adapter. Two extensions to the OpenAI body:
"customer" (a customer folder name: whose policy a prompt model uses) and "context" (a
dict: what the agent knows). Bad requests get OpenAI-style error JSON: {"error":
{"message", "type", "param", "code"}}; a failed model call is a 502 with the reason (no
retries here: the caller retries, so retries do not multiply).

Limits (core.serve_guard): body size (413), message count, option types and ranges, prompt
tokens + max_tokens against the model's context (400, with the numbers); per model a queue
of --queue requests (one generating, the others waiting) past which the answer is 503 with
Retry-After; --timeout counts from arrival, waiting included. Generation stops at the
deadline or as soon as the client disconnects (checked after every token). With
$CSFORGE_SERVE_TOKEN set, every route but /health needs `Authorization: Bearer <token>`.
Runs on waitress (threads share the one loaded model).
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any, Iterator

from core.serve_guard import Gate, Limits, Refused, Ticket


def _error(message: str, status: int = 400, type_: str = "invalid_request_error",
           param: str | None = None, code: str | None = None) -> Any:
    from flask import jsonify

    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return jsonify(body), status


def _error_bytes(status: int, message: str) -> bytes:
    """The same error JSON for answers given outside Flask (token check, a full server)."""
    kind = "authentication_error" if status == 401 else "server_busy" if status == 503 else "invalid_request_error"
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


def _refused(exc: Refused) -> Any:
    kind = {413: "invalid_request_error", 499: "client_closed", 503: "server_busy"}.get(exc.status, "invalid_request_error")
    resp, status = _error(exc.message, exc.status, kind, exc.param)
    if exc.retry_after is not None:
        resp.headers["Retry-After"] = str(exc.retry_after)
    return resp, status


def _usage(c: Any) -> dict:
    return {"prompt_tokens": c.input_tokens, "completion_tokens": c.output_tokens,
            "total_tokens": c.input_tokens + c.output_tokens}


def _finish_reason(c: Any, max_tokens: int | None) -> str:
    """OpenAI's finish_reason: "length" when the reply was cut at max_tokens."""
    return "length" if max_tokens and c.output_tokens >= max_tokens else "stop"


def _sse_events(model_name: str, events: Iterator[Any], include_usage: bool,
                max_tokens: int | None = None) -> Iterator[str]:
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
            yield chunk({}, _finish_reason(item, max_tokens), **extra)
    yield "data: [DONE]\n\n"


def make_app(model_name: str, limits: Limits | None = None) -> Any:
    """The Flask app serving one model (tests mount it on a free port)."""
    from flask import Flask, Response, jsonify, request

    from core import llm, local_provider
    from core.guard import TokenGate

    limits = limits or Limits()
    app = Flask(f"csforge-serve-{model_name}")
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes
    gates = {"local": Gate(limits.queue, serial=True), "remote": Gate(limits.queue, serial=False)}

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "ok", "model": model_name,
                        "queue": {k: g.status() for k, g in gates.items() if g.admitted}})

    @app.get("/v1/models")
    def models() -> Any:
        return jsonify({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "csforge"}]})

    @app.post("/v1/chat/completions")
    def completions() -> Any:
        deadline = time.monotonic() + limits.timeout_s
        disconnected = request.environ.get("waitress.client_disconnected") or (lambda: False)
        try:
            body, opts = _read(request, model_name, limits)
            ticket = gates["local" if _local(model_name, opts) else "remote"].admit()
        except Refused as exc:
            return _refused(exc)
        try:
            ticket.wait_turn(deadline, disconnected)
        except Refused as exc:
            ticket.release()
            return _refused(exc)
        stop = lambda: disconnected() or time.monotonic() >= deadline  # noqa: E731
        left = max(deadline - time.monotonic(), 0.1)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _stopping(stop, lambda: llm.stream_chat(model_name, **opts, timeout=left, retries=0))
            resp = Response(_sse_events(model_name, events, include_usage, opts.get("max_tokens")),
                            mimetype="text/event-stream")
            resp.call_on_close(ticket.release)
            return resp
        try:
            token = local_provider.STOP.set(stop)
            try:
                c = llm.chat(model_name, **opts, timeout=left, retries=0)
            finally:
                local_provider.STOP.reset(token)
        finally:
            ticket.release()
        if c.error:
            return _error(c.error, 502, "upstream_error")
        return jsonify({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "finish_reason": _finish_reason(c, opts.get("max_tokens")),
                         "message": {"role": "assistant", "content": c.text}}],
            "usage": _usage(c), "csforge": {"latency_s": round(c.latency_s, 4), "cost_usd": c.cost_usd},
        })

    @app.errorhandler(404)
    def not_found(_: Any) -> Any:
        return _error(f"unknown route {request.path[:80]}", 404, code="not_found")

    @app.errorhandler(405)
    def bad_method(_: Any) -> Any:
        return _error(f"method {request.method} not allowed on {request.path[:80]}", 405)

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Any:
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            if exc.code == 413:
                return _error(f"request body is over the limit of {limits.max_body_bytes} bytes", 413)
            return _error(exc.description or exc.name, exc.code or 400)
        app.logger.exception("unhandled error")  # the details (paths, values) stay in the server log
        return _error(f"internal error ({type(exc).__name__}); see the server log", 500, "server_error")

    app.wsgi_app = TokenGate(app.wsgi_app, _error_bytes, open_paths=("/health",))
    return app


def _read(request: Any, model_name: str, limits: Limits) -> tuple[dict, dict]:
    """(body, call options) of a chat request, or Refused with the status and the numbers."""
    from core.serve_guard import parse_json, validate

    size = request.content_length
    if size is not None and size > limits.max_body_bytes:
        raise Refused(413, f"request body is {size} bytes; the limit is {limits.max_body_bytes}")
    body = parse_json(request.get_data(cache=False))
    return body, validate(body, model_name, limits)


def _local(model_name: str, opts: dict) -> bool:
    """True for a model generating in this process; refuses a prompt longer than its context."""
    from core.serve_guard import check_context

    return check_context(model_name, opts)


def _stopping(stop: Any, start: Any) -> Iterator[Any]:
    """Run a streaming call with `stop` visible to the local provider while it is read."""
    from core import local_provider

    token = local_provider.STOP.set(stop)
    try:
        yield from start()
    finally:
        local_provider.STOP.reset(token)


def create_server(app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8) -> Any:
    """waitress for `app`, watching for clients that leave (so their generation stops)."""
    from core.guard import create_server as guarded

    return guarded(app, host=host, port=port, threads=threads, busy=_error_bytes(
        503, "server busy: too many open connections; retry later"), channel_request_lookahead=1)


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text[:40]!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core import registry
    from core.guard import exposure_warning, positive
    from core.redact import install_stream_filter

    d = Limits()
    ap = argparse.ArgumentParser(description="Serve a registry model as an OpenAI-compatible API.")
    ap.add_argument("name", help="registry name (python -m core.registry list)")
    ap.add_argument("--host", default="127.0.0.1", help="interface (default: this machine only)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--threads", type=positive, default=8, help="worker threads (queue + 2 at least)")
    ap.add_argument("--queue", type=positive, default=d.queue,
                    help=f"requests admitted at once, one generating (default {d.queue}); the next gets 503")
    ap.add_argument("--timeout", type=_seconds, default=d.timeout_s, help="seconds per request, waiting included")
    ap.add_argument("--max-body", type=positive, default=d.max_body_bytes, help="request body limit in bytes")
    ap.add_argument("--no-warmup", action="store_true", help="skip the one-token call that loads the model")
    args = ap.parse_args(argv)
    install_stream_filter()
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
    warning = exposure_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    limits = Limits(max_body_bytes=args.max_body, timeout_s=args.timeout, queue=args.queue)
    server = create_server(make_app(args.name, limits), args.host, args.port, max(args.threads, args.queue + 2))
    print(f"serving {args.name} at http://{args.host}:{server.effective_port}/v1", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
