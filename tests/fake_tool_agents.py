"""An OpenAI-compatible endpoint on 127.0.0.1 that answers with tool calls, for task-run tests.

    with serve_tools(responder) as url:     # responder(messages, tools) -> {"text": ..} | {"call": (name, args)}

It records each request body (messages and tools) so a test can check what the agent received.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.bodies.append(body)
        out = self.server.responder(body.get("messages") or [], body.get("tools"))
        message: dict = {"role": "assistant", "content": out.get("text")}
        if "call" in out:
            name, args = out["call"]
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{len(self.server.bodies)}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}]}
        payload = {"id": "fake", "object": "chat.completion", "created": int(time.time()), "model": "fake",
                   "choices": [{"index": 0, "finish_reason": "tool_calls" if "call" in out else "stop",
                                "message": message}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve_tools(responder: Callable[[list[dict], list | None], dict], bodies: list | None = None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.responder, server.bodies = responder, bodies if bodies is not None else []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
