"""Tool-sandbox conversations are saved as sandbox sessions with their tool calls: reopened with
the same state, continued, flagged, and turned into regression scenarios like chat sessions."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import sandbox, tool_sandbox

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Sandbox.py")


def _sandbox_app():
    from core.eval.tools_view import render_tool_sandbox

    render_tool_sandbox(["smollm2-135m"])


def _play_in_expander() -> str:
    at = AppTest.from_function(_sandbox_app, default_timeout=30).run()
    at.selectbox(key="tsb_customer").set_value("shop_zh")
    at.selectbox(key="tsb_model").set_value("@oracle")
    at.selectbox(key="tsb_task").set_value("zh-quality-refund").run()
    assert sandbox.list_sessions() == []  # nothing saved before the first message
    at.text_input(key="tsb_input").input("杯子有裂纹，照片拍好了")
    next(b for b in at.button if b.label == "Send").click().run()
    assert not at.exception
    [saved] = sandbox.list_sessions()
    assert any(f"?session={saved.id}" in c.value for c in at.caption)
    return saved.id


def test_a_tool_sandbox_conversation_is_stored_with_its_tool_calls():
    sid = _play_in_expander()
    session = sandbox.get_session(sid)
    assert tool_sandbox.is_tool_session(session) and session.customer == "shop_zh"
    assert session.context == {"environment": "shop_zh", "task": "zh-quality-refund"}
    msgs = sandbox.messages(sid)
    assert msgs[0].role == "user" and msgs[0].content == "杯子有裂纹，照片拍好了" and msgs[-1].role == "assistant"
    calls = [tool_sandbox.tool_call(m) for m in msgs if m.role == "tool"]
    refund = next(c for c in calls if c["name"] == "refund")
    assert refund["arguments"]["reason"] == "质量问题" and refund["error"] is False and refund["result"]
    assert sandbox.history(sid, "@oracle")[-1]["role"] == "assistant"  # tool rows never reach a chat model
    assert all(m["role"] != "tool" for m in sandbox.history(sid, "@oracle"))
    exported = [json.loads(line) for line in sandbox.export_jsonl(sid).splitlines()]
    assert sum(r.get("role") == "tool" for r in exported) == len(calls)


def test_reopened_tool_session_rebuilds_the_state_continues_and_is_flagged_into_a_scenario(tmp_path, monkeypatch):
    import core.eval.loop as loop

    sid = _play_in_expander()
    live = tool_sandbox.restore(sid)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["session"] = sid
    at.run()
    assert not at.exception
    codes = [c.value for c in at.code]
    assert any('"reason": "质量问题"' in c for c in codes)  # the stored refund call, inline
    state = next(d.value for d in at.dataframe if "path" in d.value.columns)
    assert sorted(state["path"]) == sorted(d["path"] for d in live.session.changes())
    assert "orders/202411080003/status" in set(state["path"])
    n_before = len(sandbox.messages(sid))
    at.text_input(key=f"tsb_more_input_{sid}").input("谢谢")
    next(b for b in at.button if b.label == "Send").click().run()
    assert not at.exception
    after = sandbox.messages(sid)
    assert len(after) > n_before and after[n_before].content == "谢谢" and after[-1].role == "assistant"
    reply = next(m for m in sandbox.messages(sid) if m.role == "assistant")
    at.selectbox(key=f"cat-{reply.id}").set_value("policy violation")
    at.text_input(key=f"comment-{reply.id}").input("refunded without asking for the photo")
    at.button(key=f"flag-btn-{reply.id}").click().run()
    assert not at.exception
    assert [f.category for f in sandbox.messages(sid)[[m.id for m in sandbox.messages(sid)].index(reply.id)].flags] \
        == ["policy violation"]
    monkeypatch.setattr(loop, "CUSTOMERS_DIR", tmp_path / "customers")
    next(b for b in at.sidebar.button if b.label == "Make a regression scenario").click().run()
    written = (tmp_path / "customers" / "shop_zh" / "regressions.yaml").read_text(encoding="utf-8")
    assert "杯子有裂纹，照片拍好了" in written and "refunded without asking for the photo" in written
