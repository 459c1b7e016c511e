"""Sandbox sessions a tester can rely on: named, in the URL, context sent and shown, retry,
blank messages refused, parallel replies, max tokens, stop, a scenario from the session."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import sandbox, sandbox_replies
from tests.helpers_llm import FakeAgent, write_registry

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Sandbox.py")


def _slow(text: str, seconds: float):
    def reply(messages):
        time.sleep(seconds)
        return text
    return reply


@pytest.fixture
def agents(tmp_path, monkeypatch):
    with FakeAgent(["A one", "A two", "A three"]) as a, FakeAgent(["B one", "B two", "B three"]) as b:
        path = write_registry(tmp_path / "registry.yaml", [
            {"name": "fake-a", "type": "base", "base_model": "scripted", "access_point": a.url},
            {"name": "fake-b", "type": "base", "base_model": "scripted", "access_point": b.url}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
        yield a, b


def _page(session_id: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if session_id:
        at.query_params["session"] = session_id
    return at.run()


def test_sessions_are_named_on_creation_and_labels_never_collide(agents):
    one = sandbox.create_session(["fake-a"], tester="ana")
    two = sandbox.create_session(["fake-a"], tester="ana")
    named = sandbox.create_session(["fake-a"], title="  退款边界  ")
    assert one.title.startswith("ana · 20") and named.title == "退款边界"
    assert one.label != two.label
    sandbox.ask(one.id, "Where is my order?")
    assert sandbox.get_session(one.id).title == one.title  # a message does not rename it


def test_blank_message_is_refused_in_core_and_on_the_page(agents):
    a, _ = agents
    s = sandbox.create_session(["fake-a"])
    with pytest.raises(sandbox.SandboxError, match="empty"):
        sandbox.add_user_message(s.id, " \n\t　")
    at = _page(s.id)
    at.chat_input[0].set_value("   ").run()
    assert not at.exception
    assert any("empty" in w.value for w in at.warning)
    assert sandbox.messages(s.id) == [] and a.requests == []


def test_context_reaches_the_model_and_is_shown(agents):
    a, _ = agents
    s = sandbox.create_session(["fake-a"], context={"order": "A1-订单", "status": "shipped"})
    sent = sandbox_replies.sent_messages(s.id, "fake-a")
    assert sent[0]["role"] == "system" and "order: A1-订单" in sent[0]["content"]
    at = _page(s.id)
    at.chat_input[0].set_value("where is it?").run()
    assert not at.exception
    assert "order: A1-订单" in a.requests[-1]["messages"][0]["content"]
    assert "A one" in [m.value for m in at.markdown]
    shown = [json.dumps(json.loads(j.value), ensure_ascii=False) for j in at.json]
    assert any("A1-订单" in v for v in shown)  # the context and what the model receives


def test_reload_keeps_the_session_and_both_replies(agents):
    at = _page()
    at.sidebar.selectbox(key="model_a").set_value("fake-a")
    at.sidebar.selectbox(key="model_b").set_value("fake-b")
    at.sidebar.text_input(key="title").input("two bots")
    at.sidebar.button[0].click().run()
    session_id = at.query_params["session"]
    at.chat_input[0].set_value("first").run()
    at.chat_input[0].set_value("second").run()
    assert not at.exception
    again = _page(session_id)  # a reload: only the URL survives
    assert not again.exception
    assert again.sidebar.selectbox(key="pick").value == session_id
    shown = [m.value for m in again.markdown]
    assert {"first", "second", "A one", "A two", "B one", "B two"} <= set(shown)
    assert again.subheader[0].value == "two bots"


def test_unknown_session_in_the_url_is_reported(agents):
    at = _page("nope")
    assert not at.exception
    assert any("unknown sandbox session 'nope'" in w.value for w in at.warning)


def test_unanswered_message_can_be_retried(agents):
    a, b = agents
    s = sandbox.create_session(["fake-a", "fake-b"])
    sandbox.add_user_message(s.id, "hello?")  # stored, then the page switched before any reply
    assert set(sandbox.pending(s.id)) == {"fake-a", "fake-b"}
    at = _page(s.id)
    assert any("no reply" in w.value for w in at.warning)
    at.button(key="retry_btn").click().run()
    assert not at.exception
    assert sandbox.pending(s.id) == {}
    assert sorted(m.content for m in sandbox.messages(s.id) if m.role == "assistant") == ["A one", "B one"]
    assert len(a.requests) == len(b.requests) == 1


def test_side_by_side_replies_run_in_parallel(tmp_path, monkeypatch):
    with FakeAgent([_slow("slow A", 1.5)]) as a, FakeAgent([_slow("slow B", 1.5)]) as b:
        s = sandbox.create_session([a.url, b.url])
        start = time.perf_counter()
        replies = sandbox.ask(s.id, "hi")
        took = time.perf_counter() - start
    assert sorted(r.content for r in replies) == ["slow A", "slow B"]
    assert took < 2.7, f"two 1.5 s replies took {took:.1f} s: not parallel"


def test_max_tokens_from_the_page_reaches_the_model(agents):
    a, _ = agents
    s = sandbox.create_session(["fake-a"])
    at = _page(s.id)
    at.sidebar.number_input(key="max_tokens").set_value(48).run()
    at.chat_input[0].set_value("short please").run()
    assert not at.exception
    assert a.requests[-1]["max_tokens"] == 48


def test_stop_keeps_what_was_said_and_marks_it_stopped(tmp_path):
    long_text = " ".join(f"w{i}" for i in range(4000))
    with FakeAgent([long_text]) as a:
        s = sandbox.create_session([a.url])
        sandbox.add_user_message(s.id, "tell me everything")
        stop = threading.Event()
        stored = None
        for model, item in sandbox_replies.stream(s.id, stop=stop, max_tokens=5000):
            if isinstance(item, str):
                stop.set()
            elif item is not None:
                stored = item
    assert stored is not None and stored.error == sandbox_replies.STOPPED
    assert stored.content.startswith("w0") and len(stored.content) < len(long_text)
    assert sandbox.pending(s.id) == {}  # a stopped reply is an answer, not a lost message


def test_closing_the_stream_stores_what_was_shown_at_once(tmp_path):
    """The page's Stop reruns the script, which closes the stream: the reply must be stored before
    the next run draws the page (no 'unanswered' state, no second reply from the thread)."""
    long_text = " ".join(f"w{i}" for i in range(4000))
    with FakeAgent([long_text]) as a:
        s = sandbox.create_session([a.url])
        sandbox.add_user_message(s.id, "tell me everything")
        replies = sandbox_replies.stream(s.id, max_tokens=5000)
        shown = []
        for model, item in replies:
            if isinstance(item, str):
                shown.append(item)
                if len(shown) == 3:
                    break
        replies.close()
        assert sandbox.pending(s.id) == {}
        time.sleep(1.0)  # the thread sees the stop flag at its next piece and must not store again
    stored = [m for m in sandbox.messages(s.id) if m.role == "assistant"]
    assert len(stored) == 1 and stored[0].error == sandbox_replies.STOPPED
    assert stored[0].content == "".join(shown).strip()


def test_flagged_session_becomes_a_scenario_from_the_page(agents, tmp_path, monkeypatch):
    import core.eval.loop as loop

    monkeypatch.setattr(loop, "CUSTOMERS_DIR", tmp_path / "customers")
    s = sandbox.create_session(["fake-a"], customer="shop_zh")
    at = _page(s.id)
    button = next(b for b in at.sidebar.button if b.label == "Make a regression scenario")
    assert button.disabled  # nothing flagged yet
    reply = sandbox.ask(s.id, "can I return it after 30 days?")[0]
    sandbox.flag(reply.id, "policy violation", "promised a refund outside policy")
    at = _page(s.id)
    next(b for b in at.sidebar.button if b.label == "Make a regression scenario").click().run()
    assert not at.exception
    written = tmp_path / "customers" / "shop_zh" / "regressions.yaml"
    assert written.exists() and "can I return it after 30 days?" in written.read_text(encoding="utf-8")
    assert any("written to regressions.yaml" in m.value for m in at.success)


def test_a_reply_cut_short_as_interrupted_leaves_the_message_unanswered_until_relabelled(tmp_path):
    """The page streams with cut_short_as=INTERRUPTED (a closed stream may be a reload); its next run
    relabels the reply STOPPED only when it knows the Stop button was the cause."""
    long_text = " ".join(f"w{i}" for i in range(4000))
    with FakeAgent([long_text]) as a:
        s = sandbox.create_session([a.url])
        sandbox.add_user_message(s.id, "tell me everything")
        replies = sandbox_replies.stream(s.id, cut_short_as=sandbox.INTERRUPTED, max_tokens=5000)
        for model, item in replies:
            if isinstance(item, str):
                break
        replies.close()
        assert sandbox_replies.wait_settled(s.id)  # the cut-short reply is stored...
        assert list(sandbox.pending(s.id)) == [a.url]  # ...but does not answer the message
        assert sandbox.history(s.id, a.url)[-1]["role"] == "user"  # nor is it sent back to the model
        assert sandbox.relabel_last_replies(s.id, sandbox.INTERRUPTED, sandbox_replies.STOPPED) == 1
    assert sandbox.pending(s.id) == {}
    stored = [m for m in sandbox.messages(s.id) if m.role == "assistant"]
    assert len(stored) == 1 and stored[0].error == sandbox_replies.STOPPED
