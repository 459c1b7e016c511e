"""Pages that agree: Data's figures follow its filters, Home shows production per client from the
release gate's one map, message numbers count from 1 like the bubbles, the sidebar says Home."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import registry

ROOT = Path(__file__).resolve().parent.parent


def test_data_headline_figures_follow_the_filter():
    at = AppTest.from_file(str(ROOT / "pages/1_Data.py"), default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Needs a human"] not in ("0%", "100%")
    at.sidebar.radio[0].set_value("yes").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Needs a human"] == "100%"  # of the conversations shown, not of the whole dataset
    charts = at.get("plotly_chart")
    assert charts
    at.sidebar.radio[0].set_value("no").run()
    assert {m.label: m.value for m in at.metric}["Needs a human"] == "0%"
    caption = next(c.value for c in at.caption if c.value.startswith("id "))
    assert "no human needed" in caption


def test_handoff_point_is_numbered_like_the_bubbles():
    def page():
        from core.ui import chat_bubbles

        chat_bubbles([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"},
                      {"role": "user", "content": "转人工"}], highlight=2)

    at = AppTest.from_function(page).run()
    assert "message 3, index 2" in at.error[0].value


def test_home_shows_production_per_client_from_one_place(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    registry.upsert(registry.Entry(name="shared", type="base", base_model="x", access_point="gpt-4o-mini",
                                   metrics={"production_for": ["shop_zh", "twitter_care"]}))
    registry.upsert(registry.Entry(name="own", type="base", base_model="x", access_point="gpt-4o-mini",
                                   customer="acme", status="production"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    models = at.dataframe[1].value.set_index("model")
    assert models.loc["shared", "production for"] == "shop_zh, twitter_care"
    assert models.loc["own", "production for"] == "acme"
    links = [e.proto.label for e in at.sidebar.get("page_link")]
    assert links == ["Home", "Data", "Factory", "Sandbox", "Scorecard", "Costs"]  # Home, not "app"
