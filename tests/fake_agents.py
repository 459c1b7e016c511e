"""Scripted agents served on 127.0.0.1 as OpenAI-compatible endpoints, for eval tests and the bench.

    with serve(good_agent()) as url:          # url = "http://127.0.0.1:<port>/v1"
        run = runner.run_suite(suite, url, ...)

A responder is `f(messages: list[dict]) -> str`; it sees what the agent would see (system
message with the context, then the user/assistant turns). Return STALL to hang the request
until the server stops (a timeout test). `delay_s` makes every answer wait, like a real model.
No network, no key: the standard library's threading HTTP server.
"""
from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

STALL = object()
Responder = Callable[[list[dict]], "str | object"]


def _last_user(messages: list[dict]) -> str:
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")


def _user_turns(messages: list[dict]) -> list[str]:
    return [m.get("content") or "" for m in messages if m.get("role") == "user"]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        messages = body.get("messages") or []
        self.server.calls.append(messages)
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        reply = self.server.responder(messages)
        if reply is STALL:
            self.server.stop.wait(60)
            return
        text = str(reply)
        n_in = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1
        payload = {
            "id": "fake-1", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": len(text) // 4 + 1,
                      "total_tokens": n_in + len(text) // 4 + 1},
        }
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, responder: Responder, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.responder = responder
        self.delay_s = delay_s
        self.calls: list[list[dict]] = []
        self.stop = threading.Event()


@contextmanager
def serve(responder: Responder, delay_s: float = 0.0) -> Iterator[str]:
    """Serve `responder` on a free port; yields the base URL (the server's `.calls` on `url.server`)."""
    server = _Server(responder, delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = _Url(f"http://127.0.0.1:{server.server_address[1]}/v1")
    url.server = server
    try:
        yield url
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


class _Url(str):
    server: _Server


# ---------------------------------------------------------------- scripted agents

HANDOFF_ZH = "您好，正在为您转接人工客服，请稍候。"


def good_agent() -> Responder:
    """A careful shop_zh agent: polite Chinese, hands off when it should, never leaks."""
    def respond(messages: list[dict]) -> str:
        text = _last_user(messages)
        if re.search(r"内部|机密|备注|提示词|system prompt|instructions", text, re.I):
            return "抱歉，这部分信息属于保密范围，无法提供。" + HANDOFF_ZH
        if re.search(r"人工|投诉|12315|差评", text):
            return HANDOFF_ZH
        if re.search(r"[A-Za-z]{3,}", text) and not re.search(r"[\u4e00-\u9fff]", text):
            return "Sure, I can help with your order. Your parcel is on its way and should arrive soon."
        if "快递" in text or "物流" in text:
            return "您好，已为您登记物流催促，物流更新后会第一时间通知您。"
        if "退款" in text:
            return "您好，请提供订单号，我来为您查询退款进度。"
        return "您好，请问有什么可以帮您？"
    return respond


def bad_agent() -> Responder:
    """Leaks 内部 notes, never hands off, answers in English, and returns one empty reply."""
    state = {"empty_sent": False}

    def respond(messages: list[dict]) -> str:
        text = _last_user(messages)
        if "退款" in text and not state["empty_sent"]:
            state["empty_sent"] = True
            return ""
        if re.search(r"内部|机密|备注", text):
            return "根据内部备注，这位顾客被标记为高风险用户，进货价只有 35 元。"
        if re.search(r"人工|投诉|12315|差评", text):
            return "您好，我可以继续为您解答，请问还有什么问题？"
        if "快递" in text or "物流" in text:
            return "Your parcel is delayed, please wait a few more days."
        return "您好，请问有什么可以帮您？"
    return respond


def reference_agent(replies: dict[tuple[str, ...], str], default: str = "") -> Responder:
    """Answers each conversation with the reply scripted for its user turns so far."""
    def respond(messages: list[dict]) -> str:
        return replies.get(tuple(_user_turns(messages)), default)
    return respond


def scripted(*answers: str) -> Responder:
    """Returns the answers in order (the last one repeats): a judge or a simulated customer."""
    lock = threading.Lock()
    queue = list(answers)

    def respond(messages: list[dict]) -> str:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]
    return respond


def stalling_agent() -> Responder:
    """Never answers (the request hangs until the server stops)."""
    return lambda messages: STALL


ECHO_REPLIES = ["好的，您的问题已记录，我们会尽快为您处理。", "不客气，祝您购物愉快！还有其他问题随时联系我们。"]


def echo_agent() -> Responder:
    """A fixed reply per turn number (the bench's endpoint)."""
    return lambda messages: ECHO_REPLIES[min(len(_user_turns(messages)), len(ECHO_REPLIES)) - 1]


def main() -> None:
    """`python -m tests.fake_agents --delay 0.2`: serve the echo agent until killed (prints the URL)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--delay", type=float, default=0.2)
    args = ap.parse_args()
    with serve(echo_agent(), delay_s=args.delay) as url:
        print(url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
