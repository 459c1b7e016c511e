"""Sandbox: sessions, side-by-side replies, flags, ratings, stats, export; the page via AppTest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import sandbox
from tests.helpers_llm import FakeAgent, write_registry

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Sandbox.py")


@pytest.fixture
def agents(tmp_path, monkeypatch):
    """Two scripted agents in a temporary registry: 'fake-a' and 'fake-b'."""
    with FakeAgent(["A says hello", "A again"]) as a, FakeAgent(["B says hi", "B again"]) as b:
        path = write_registry(tmp_path / "registry.yaml", [
            {"name": "fake-a", "type": "base", "base_model": "scripted", "access_point": a.url},
            {"name": "fake-b", "type": "base", "base_model": "scripted", "access_point": b.url}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
        yield a, b


def test_side_by_side_session_flags_rating_stats_export(agents):
    a, _ = agents
    s = sandbox.create_session(["fake-a", "fake-b"], customer="shop_zh", tester="ana", context={"order": "A1"})
    first = sandbox.ask(s.id, "Where is my order?")
    second = sandbox.ask(s.id, "And now?")
    assert [m.content for m in first + second] == ["A says hello", "B says hi", "A again", "B again"]
    # each model saw the user turns and only its own replies, with the context
    assert [m["content"] for m in a.requests[-1]["messages"]][1:] == ["Where is my order?", "A says hello", "And now?"]
    assert "order: A1" in a.requests[-1]["messages"][0]["content"]

    sandbox.flag(first[0].id, "hallucination", "invented a date")
    sandbox.flag(first[0].id, "rude")  # two flags on one reply: still one flagged turn
    sandbox.flag(second[1].id, "wrong language")
    sandbox.rate(s.id, 2)
    with pytest.raises(sandbox.SandboxError):
        sandbox.rate(s.id, 6)
    with pytest.raises(sandbox.SandboxError, match="category"):
        sandbox.flag(first[0].id, "boring")
    user_msg = next(m for m in sandbox.messages(s.id) if m.role == "user")
    with pytest.raises(sandbox.SandboxError, match="agent reply"):
        sandbox.flag(user_msg.id, "rude")

    stats = {r["model"]: r for r in sandbox.model_stats()}
    assert stats["fake-a"]["agent_turns"] == 2 and stats["fake-a"]["flagged_turns"] == 1
    assert stats["fake-a"]["error_rate"] == 0.5
    assert stats["fake-a"]["by_category"] == {"hallucination": 1, "rude": 1}
    assert stats["fake-b"]["by_category"] == {"wrong language": 1}

    lines = [json.loads(line) for line in sandbox.export_jsonl(s.id).splitlines()]
    assert lines[0]["type"] == "session" and lines[0]["rating"] == 2 and lines[0]["context"] == {"order": "A1"}
    assert len(lines) == 1 + 6
    assert lines[2]["flags"][0]["comment"] == "invented a date"
    reopened = sandbox.list_sessions()[0]
    assert reopened.id == s.id and reopened.title.startswith("ana · ") and reopened.rating == 2


def test_failed_call_is_stored_as_a_reply_and_left_out_of_history(tmp_path, monkeypatch):
    with FakeAgent(mode="500") as broken:
        s = sandbox.create_session([broken.url])
        reply = sandbox.ask(s.id, "hi", retries=0)[0]
    assert reply.error and "server error 500" in reply.error
    assert sandbox.history(s.id, broken.url) == [{"role": "user", "content": "hi"}]
    assert sandbox.model_stats()[0]["call_errors"] == 1


def test_page_chat_side_by_side_flag_rate_and_reopen(agents):
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    at.sidebar.selectbox(key="model_a").set_value("fake-a")
    at.sidebar.selectbox(key="model_b").set_value("fake-b")
    at.sidebar.text_input(key="tester").input("ana")
    at.sidebar.button[0].click().run()  # Start session
    assert not at.exception
    session_id = at.query_params["session"]
    assert sandbox.get_session(session_id).tester == "ana"
    assert at.sidebar.selectbox(key="pick").value == session_id  # the picker follows the new session

    at.chat_input[0].set_value("Where is my order?").run()
    assert not at.exception
    shown = [m.value for m in at.markdown]
    assert "A says hello" in shown and "B says hi" in shown
    assert any("in /" in c.value and "tokens" in c.value for c in at.caption)  # usage under each reply

    reply = next(m for m in sandbox.messages(session_id) if m.model == "fake-a")
    at.selectbox(key=f"cat-{reply.id}").set_value("hallucination")
    at.text_input(key=f"comment-{reply.id}").input("made up a tracking number")
    at.button(key=f"flag-btn-{reply.id}").click().run()
    assert not at.exception
    assert [f.category for m in sandbox.messages(session_id) if m.id == reply.id for f in m.flags] == ["hallucination"]
    assert any("hallucination: made up a tracking number" in w.value for w in at.warning)

    at.sidebar.radio(key=f"rating-{session_id}").set_value(4).run()
    next(b for b in at.sidebar.button if b.label == "Save rating").click().run()
    assert sandbox.get_session(session_id).rating == 4

    # a fresh page (a browser reload) reopens the stored session from the list
    again = AppTest.from_file(PAGE, default_timeout=60).run()
    again.sidebar.selectbox(key="pick").set_value(session_id).run()
    assert again.query_params["session"] == session_id
    assert not again.exception
    assert "A says hello" in [m.value for m in again.markdown]
    assert any(w.value.startswith("hallucination") and w.icon == "🚩" for w in again.warning)
    table = again.dataframe[0].value
    assert set(table["model"]) == {"fake-a", "fake-b"}
    by_model = table.set_index("model")
    assert by_model.loc["fake-a", "error rate"] == "100%" and by_model.loc["fake-b", "error rate"] == "0%"


def test_page_shows_unavailable_models_with_the_key_to_set(agents, monkeypatch):
    from core import registry

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    registry.upsert(registry.Entry(name="gem", type="base", base_model="g", access_point="gemini/gemini-2.5-flash"))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    options = at.sidebar.selectbox(key="model_a").options
    assert "gem · base (unavailable: set GEMINI_API_KEY)" in options and "fake-a · base" in options


def test_page_preselects_the_model_sent_from_another_page(agents):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = "fake-b"
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_a").value == "fake-b"
