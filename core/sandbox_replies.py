"""Getting the agents' replies for a sandbox session: in parallel, streamed, stoppable, retryable.

    from core import sandbox, sandbox_replies
    s = sandbox.create_session(["smollm2-135m", "shop_zh-prompt"], customer="shop_zh")
    sandbox.add_user_message(s.id, "我的包裹在哪里？")
    for model, item in sandbox_replies.stream(s.id, max_tokens=128):   # both models at once
        print(model, item)              # text pieces, then the stored sandbox.Message
    sandbox_replies.sent_messages(s.id, "shop_zh-prompt")    # what the model receives, context included

Each model answers in its own thread, so two models side by side take as long as the slower
one, not the sum. A stop event ends every stream at its next piece; what was said so far is
stored with the error "stopped by the tester", so the transcript shows what the tester saw.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

from core import sandbox

STOPPED = "stopped by the tester"


def _call_args(session: sandbox.Session, model: str) -> dict:
    return {"context": session.context, "customer": session.customer}


def sent_messages(session_id: str, model: str) -> list[dict]:
    """The messages `model` receives for the session's current history (system prompt and context in)."""
    from core import llm

    session = sandbox.get_session(session_id)
    history = sandbox.history(session_id, model)
    try:
        return llm.resolve(model, history, **_call_args(session, model)).messages
    except llm.CallError as exc:
        return [{"role": "error", "content": str(exc)}]


def wait_settled(session_id: str, timeout_s: float = 3.0) -> bool:
    """Wait until every model of the session has replied, in full or cut short (a stopped stream stores
    its text as it unwinds, possibly while the next page run has already started); False when some
    still have not after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while sandbox.pending(session_id, interrupted_count=True):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _targets(session: sandbox.Session, models: list[str] | None) -> list[str]:
    waiting = sandbox.pending(session.id)
    return [m for m in (models or session.models) if m in waiting]


def reply(session_id: str, models: list[str] | None = None, **call: Any) -> list[sandbox.Message]:
    """Answer the last user message with every model that has not yet (in parallel); store and return."""
    from core import llm

    session = sandbox.get_session(session_id)
    targets = _targets(session, models)

    def one(model: str) -> llm.Completion:
        return llm.chat(model, sandbox.history(session_id, model), **_call_args(session, model), **call)

    with ThreadPoolExecutor(max_workers=max(len(targets), 1)) as pool:
        completions = list(pool.map(one, targets))
    return [sandbox.add_reply(session_id, m, c) for m, c in zip(targets, completions)]  # in session order


class _Once:
    """Each model's reply is stored exactly once: by its thread, or by a closing stream (Stop)."""

    def __init__(self) -> None:
        self.lock, self.stored = threading.Lock(), set()

    def store(self, session_id: str, model: str, completion) -> sandbox.Message | None:
        with self.lock:
            if model in self.stored:
                return None
            self.stored.add(model)
        return sandbox.add_reply(session_id, model, completion)


def _stream_one(session: sandbox.Session, model: str, out: queue.Queue, stop: threading.Event,
                once: _Once, cut_short_as: str, call: dict) -> None:
    from core import llm

    pieces: list[str] = []
    completion = None
    stream = llm.stream_chat(model, sandbox.history(session.id, model), **_call_args(session, model), **call)
    try:
        for item in stream:
            if stop.is_set():
                break
            if isinstance(item, str):
                pieces.append(item)
                out.put((model, item))
            else:
                completion = item
    except Exception as exc:  # llm.stream_chat reports failures itself; this is a last resort
        completion = llm.Completion("", model, error=f"stream failed: {exc}")
    finally:
        stream.close()
    if completion is None:  # stopped before the end: keep what was said
        completion = llm.Completion("".join(pieces).strip(), model, error=cut_short_as)
    message = once.store(session.id, model, completion)
    if message is not None:
        out.put((model, message))


def stream(session_id: str, models: list[str] | None = None, stop: threading.Event | None = None,
           poll_s: float = 0.25, cut_short_as: str = STOPPED,
           **call: Any) -> Iterator[tuple[str, str | sandbox.Message | None]]:
    """Yield (model, text piece), then (model, stored Message) per model; ("", None) ticks every poll_s.

    A tick comes when nothing arrived for poll_s, so a caller (a Streamlit page) gets the chance to
    notice a Stop click. Closing the generator (Stop) sets `stop` and stores, at once, each
    unfinished reply as the text yielded so far, marked `cut_short_as` (STOPPED): what the tester
    saw. The page passes sandbox.INTERRUPTED, since a closed stream may be a reload as well as a
    Stop, and relabels the replies STOPPED when its next run knows it was the Stop button.
    """
    from core import llm

    session = sandbox.get_session(session_id)
    stop = stop or threading.Event()
    out: queue.Queue = queue.Queue()
    once = _Once()
    targets = _targets(session, models)
    seen = {m: [] for m in targets}
    threads = [threading.Thread(target=_stream_one, args=(session, m, out, stop, once, cut_short_as, call), daemon=True)
               for m in targets]
    for t in threads:
        t.start()
    left = set(targets)
    started = time.perf_counter()
    try:
        while left:
            try:
                model, item = out.get(timeout=poll_s)
            except queue.Empty:
                yield "", None
                continue
            if isinstance(item, sandbox.Message):
                left.discard(model)
            else:
                seen[model].append(item)
            yield model, item
    finally:
        stop.set()
        for model in left:  # closed early: the threads may be blocked on the network; do not wait
            once.store(session.id, model, llm.Completion("".join(seen[model]).strip(), model,
                                                         latency_s=time.perf_counter() - started, error=cut_short_as))
