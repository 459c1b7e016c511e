"""Home and Data pages through Streamlit's AppTest, over the real customer datasets."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_home_lists_customers_with_counts_and_shares():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    shop = table[table["dataset"] == "shop_zh/demo"].iloc[0]
    assert shop["conversations"] >= 300 and 0 < shop["good"] < 1 and 0 < shop["needs a human"] < 1
    assert at.metric[0].value == str(table["customer"].nunique())


def test_data_page_filters_browses_and_highlights_handoff():
    at = AppTest.from_file(str(ROOT / "pages/1_Data.py"), default_timeout=60).run()
    assert not at.exception
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    total = at.metric[0].value
    at.sidebar.radio[0].set_value("yes").run()
    shown, all_ = at.metric[0].value.split(" / ")
    assert int(shown) < int(all_) and total.endswith(all_)
    # every conversation shown now needs a human, so the handoff message is highlighted
    assert any("Human must take over here" in e.value for e in at.error)
    at.sidebar.slider[0].set_value((0.95, 1.0)).run()
    assert not at.exception


def test_data_page_shows_figures_and_rules():
    at = AppTest.from_file(str(ROOT / "pages/1_Data.py"), default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 6
    assert any("0.3" in m.value for m in at.markdown), "the customer's rules are shown"


def test_home_shows_each_models_last_cs_eval_scores(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("models:\n- {name: m1, type: base, base_model: x, access_point: gpt-4o-mini,\n"
                   "   metrics: {cs_eval_shop_zh: {pass_rate: 0.5, error_rate: 0.25}}}\n"
                   "- {name: m2, type: base, base_model: x, access_point: gpt-4o-mini}\n")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    models = at.dataframe[1].value.set_index("model")
    assert models.loc["m1", "last CS eval"] == "shop_zh: pass 50%, errors 25%"
    assert models.loc["m2", "last CS eval"] == "not evaluated"
