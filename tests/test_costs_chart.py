"""Costs: every model with a price and a pass rate on a log cost axis, a clear empty state, and
a priced model can be evaluated from the page (refused with the key to set when it has none)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from core import cost_quality, pricing
from core.eval import store as eval_store
from core.prices import costs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def setup(tmp_path, monkeypatch):
    if not (ROOT / "data" / "shop_zh" / "demo.jsonl").exists():
        pytest.skip("data/shop_zh/demo.jsonl is not generated yet")
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"models": [
        {"name": "embedded", "type": "base", "base_model": "x", "access_point": "local/embedded",
         "metrics": {"cs_eval_shop_zh": {"pass_rate": 0.25, "cost_per_session_usd": 0.0}}}]}))
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    monkeypatch.setattr(pricing, "tokenizer_for", lambda model: "approx")
    monkeypatch.setattr(costs, "tokenizer_for", lambda model: "approx")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _finished_run(model: str, pass_rate: float, cost: float) -> None:
    eval_store.create_run(f"run-{model}", {"model": model, "customer": "shop_zh"}, "h", "shop_zh")
    eval_store.set_status(f"run-{model}", "finished", {"pass_rate": pass_rate, "error_rate": 0.1,
                                                      "cost_per_session_usd": cost})


def test_priced_models_from_runs_are_charted_on_a_log_axis_and_free_ones_apart():
    prices = pricing.Prices.load()
    _finished_run("openai/gpt-4o-mini", 0.7, 0.0004)
    _finished_run("gemini/gemini-2.5-flash-lite", 0.6, 0.0)  # measured $0 (cached): the price table prices it
    priced, free = cost_quality.points(prices, "shop_zh/demo", "shop_zh")
    assert [p["name"] for p in priced] == ["gemini/gemini-2.5-flash-lite", "openai/gpt-4o-mini"]
    assert priced[0]["cost_source"] == "price table on shop_zh/demo" and priced[0]["cost_per_session"] > 0
    assert [p["name"] for p in free] == ["embedded"]
    assert cost_quality.figure(priced).layout.xaxis.type == "log"
    todo = cost_quality.unevaluated(prices, "shop_zh/demo", "shop_zh")
    assert "openai/gpt-4o-mini" not in todo and "openai/gpt-4.1-mini" in todo


def test_page_empty_state_and_evaluate_a_priced_model():
    at = AppTest.from_file(str(ROOT / "pages" / "5_Costs.py"), default_timeout=60).run()
    assert not at.exception
    assert not at.get("plotly_chart")
    assert any("nothing to chart" in i.value for i in at.info)
    assert any("embedded (pass 25%)" in c.value for c in at.caption)
    at.selectbox(key="costs_eval_model").set_value("openai/gpt-4.1-mini")
    at.button(key="costs_eval_go").click().run()
    assert not at.exception
    assert any("OPENAI_API_KEY" in e.value and "Fix:" in e.value for e in at.error)
    assert eval_store.runs() == []


def test_page_charts_once_a_priced_model_has_a_pass_rate():
    _finished_run("openai/gpt-4o-mini", 0.7, 0.0004)
    at = AppTest.from_file(str(ROOT / "pages" / "5_Costs.py"), default_timeout=60).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 1
    inference = next(d.value for d in at.dataframe if "provider" in d.value.columns)
    assert inference.columns[:3].tolist() == ["model", "$/session", "$/1k sessions"]  # never scrolled away
    chart = next(d.value for d in at.dataframe if "cost_source" in d.value.columns)
    assert list(chart["name"]) == ["openai/gpt-4o-mini"]
