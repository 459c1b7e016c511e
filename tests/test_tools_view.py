"""The task-run views (Scorecard tab, Sandbox section) over a real SQLite store and environment."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _scorecard_app():
    from core.eval.tools_view import render_task_runs

    render_task_runs("shop_zh")


def _sandbox_app():
    from core.eval.tools_view import render_tool_sandbox

    render_tool_sandbox(["smollm2-135m"])


def _store_runs():
    from core.eval import agents as ag
    from core.eval import tasks as tk
    from core.eval import tools as tl

    env = tl.load_environment("shop_zh")
    tk.run_tasks(tk.TaskSettings(model="@oracle", customer="shop_zh", trials=2))
    plans = {"zh-return-in-window": [tk.Action("refund", {"order_no": "202411050001", "amount": 70.0,
                                                           "reason": "七天无理由"})]}
    tk.run_tasks(tk.TaskSettings(model="@partial", customer="shop_zh", tasks=["zh-return-in-window"], force=True),
                 agent_factory=lambda task, trial: ag.OracleAgent(task, env, plans[task.id]))


def test_scorecard_tab_shows_pass_hat_transcript_and_gold_diff():
    _store_runs()
    at = AppTest.from_function(_scorecard_app, default_timeout=30).run()
    assert not at.exception
    runs = at.dataframe[0].value
    assert set(runs["model"]) == {"@oracle", "@partial"}
    oracle = runs[runs["model"] == "@oracle"].iloc[0]
    assert oracle["pass^1"] == 1.0 and oracle["pass^2"] == 1.0 and oracle["tasks"] == 5
    at.selectbox(key="tk_run").set_value(runs[runs["model"] == "@partial"].iloc[0]["run"]).run()
    per_task = at.dataframe[1].value
    assert per_task.iloc[0]["passed"] == "0/1" and "final state = gold replay" in per_task.iloc[0]["failed criteria"]
    assert any("differs from gold at orders/202411050001/refunded" in e.value for e in at.error)
    gold = at.dataframe[3].value
    assert list(gold["path"]) == ["orders/202411050001/refunded", "refunds/202411050001/amount"]
    assert list(gold["before"]) == ["79.0", "79.0"] and list(gold["after"]) == ["70.0", "70.0"]


def test_sandbox_plays_the_customer_and_shows_tool_calls_and_state():
    at = AppTest.from_function(_sandbox_app, default_timeout=30).run()
    assert not at.exception
    at.selectbox(key="tsb_customer").set_value("shop_zh")
    at.selectbox(key="tsb_model").set_value("@oracle")
    at.selectbox(key="tsb_task").set_value("zh-quality-refund").run()
    at.text_input(key="tsb_input").input("杯子有裂纹，照片拍好了")
    next(b for b in at.button if b.label == "Send").click().run()
    assert not at.exception
    codes = [c.value for c in at.code]
    assert any('"reason": "质量问题"' in c for c in codes)  # the refund call, inline
    diff = at.dataframe[0].value
    assert "orders/202411080003/status" in set(diff["path"])
    at.button(key="tsb_reset").click().run()
    assert at.dataframe[0].value.empty  # a fresh copy of the state


def test_task_runs_stay_out_of_the_suite_comparison():
    from core.eval import report

    _store_runs()
    assert "@oracle" not in report.latest_runs("shop_zh") and report.trend("@oracle", "shop_zh") == []
