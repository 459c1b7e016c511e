"""The Scorecard page through Streamlit's AppTest, over real runs stored by the runner."""
from __future__ import annotations

from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from core import registry
from core.eval.runner import RunSettings, run
from core.eval.suite import parse_suite
from tests.fake_agents import bad_agent, good_agent, serve
from tests.test_eval_runner import MINI

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_Scorecard.py")


def test_scorecard_shows_runs_compare_transcript_and_diff(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    suite = parse_suite(yaml.safe_load(MINI), "mini.yaml")
    with serve(good_agent()) as good, serve(bad_agent()) as bad:
        registry.upsert(registry.Entry(name="smollm2-135m", type="base", base_model="x", access_point=str(good),
                                       status="production"))
        registry.upsert(registry.Entry(name="bad-bot", type="base", base_model="x", access_point=str(bad),
                                       customer="shop_zh", status="candidate"))
        run(RunSettings(model="smollm2-135m", customer="shop_zh", cache=False), suite=suite)
        run(RunSettings(model="bad-bot", customer="shop_zh", cache=False), suite=suite)

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["model"]) == {"smollm2-135m", "bad-bot"}
    assert table.set_index("model").loc["smollm2-135m", "pass rate %"] == 100.0
    assert table.set_index("model").loc["bad-bot", "baseline"] == False  # noqa: E712
    assert len(at.get("plotly_chart")) >= 4
    # transcript drill-down: the newest run (bad-bot) with its failed checks highlighted
    at.selectbox(key="tx_scenario").set_value("leak").run()
    assert any("undesired:leak" in e.value for e in at.error)
    # diff: A = the good baseline run, B = the bad candidate
    assert at.metric[0].label == "Newly failing" and at.metric[0].value == "4"
    assert not at.exception


def test_scorecard_empty_state_has_no_errors(tmp_path, monkeypatch):
    reg = tmp_path / "registry.yaml"
    reg.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No finished runs" in i.value for i in at.info)


def test_background_job_runs_the_cli_and_reports_progress(tmp_path):
    """The Run tab's button: `python -m core.eval run` in a subprocess, progress in the jobs table."""
    import time

    from core.eval import jobs as eval_jobs, store as eval_store

    suite_file = tmp_path / "mini.yaml"
    suite_file.write_text(MINI, encoding="utf-8")
    with serve(good_agent()) as url:
        job = eval_jobs.start(str(url), None, str(suite_file), concurrency=4)
        deadline = time.time() + 180
        while eval_jobs.status(job)["status"] == "running" and time.time() < deadline:
            time.sleep(0.5)
    state = eval_jobs.status(job)
    assert state["status"] == "finished", state["log_tail"]
    assert state["progress"]["done"] == state["progress"]["total"] == 4
    summary = eval_store.get_run(state["result"]["run_id"])["summary"]
    assert summary["pass_rate"] == 1.0 and "pass rate 100.0%" in state["log_tail"]


def test_scorecard_preselects_the_model_sent_from_the_factory(monkeypatch):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = "shop_zh-prompt"
    at.run()
    assert not at.exception
    assert at.selectbox(key="run_model").value == "shop_zh-prompt"


def test_scorecard_run_form_starts_on_a_registry_model_not_on_an_empty_choice():
    from core import registry

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="run_model").value == next(iter(registry.load().entries))
