"""Scorecard: the test x model grid opens a transcript with its failed checks, skipped checks are
shown as skipped, registry scores appear as such, subsets and latency budgets per run, resume
from the page, `eval show --transcripts`."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from core import registry
from core.eval import cli as eval_cli, report as eval_report, store as eval_store
from core.eval.runner import RunSettings, run
from core.eval.subset import SubsetError, narrow
from core.eval.suite import parse_suite
from tests.fake_agents import bad_agent, good_agent, serve
from tests.test_eval_runner import MINI

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_Scorecard.py")


@pytest.fixture
def mini():
    return parse_suite(yaml.safe_load(MINI), "mini.yaml")


@pytest.fixture(autouse=True)
def tmp_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def _two_runs(mini):
    with serve(good_agent()) as good, serve(bad_agent()) as bad:
        registry.upsert(registry.Entry(name="good-bot", type="base", base_model="x", access_point=str(good)))
        registry.upsert(registry.Entry(name="bad-bot", type="base", base_model="x", access_point=str(bad),
                                       customer="shop_zh", status="candidate"))
        run(RunSettings(model="good-bot", customer="shop_zh", cache=False), suite=mini)
        return run(RunSettings(model="bad-bot", customer="shop_zh", cache=False), suite=mini)


def test_grid_cells_open_the_transcript_with_failed_checks(mini):
    _two_runs(mini)
    cells = {r["scenario"]: r for r in eval_report.grid("shop_zh")}
    assert cells["leak"]["good-bot"] == "pass" and cells["leak"]["bad-bot"] == "fail"
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert not at.exception
    grid = next(d.value for d in at.dataframe if "good-bot" in d.value.columns).set_index("scenario")
    assert grid.loc["leak", "bad-bot"] == "❌ fail" and grid.loc["leak", "good-bot"] == "✅ pass"
    # a click on a cell (the selection Streamlit sends) opens that test for that model
    row = list(grid.index).index("handoff")
    at.session_state["grid"] = {"selection": {"rows": [], "columns": [], "cells": [(row, "good-bot")]}}
    at.run()
    assert not at.exception
    assert at.selectbox(key="grid_scenario").value == "handoff" and at.selectbox(key="grid_model").value == "good-bot"
    at.selectbox(key="grid_scenario").set_value("leak")
    at.selectbox(key="grid_model").set_value("bad-bot").run()
    assert not at.exception
    assert any("undesired:leak" in e.value for e in at.error)


def test_skipped_checks_are_not_shown_as_passed():
    row = {"category": "c", "passed": True, "error": None,
           "transcript": {"turns": [{"turn": 0, "user": "hi", "reply": "hello", "glitch": None,
                                     "checks": [{"name": "judge", "passed": None, "reason": "skipped: no judge model"},
                                                {"name": "contains", "passed": True, "reason": "found"}]}],
                          "conversation_checks": [{"name": "judge", "passed": None, "reason": "judge failed"}]}}
    text = eval_report.transcript_text(row)
    assert "– skipped judge: skipped: no judge model" in text and "✓ pass    contains" in text
    assert "conversation – skipped judge: judge failed" in text

    def page(row):
        from core.ui import show_checks

        show_checks(row["transcript"]["turns"][0]["checks"])
        show_checks(row["transcript"]["conversation_checks"], prefix="conversation · ")

    at = AppTest.from_function(page, args=(row,)).run()
    assert [i.value for i in at.info] == ["– skipped · judge: skipped: no judge model",
                                          "– skipped · conversation · judge: judge failed"]
    assert not at.success and [c.value for c in at.caption] == ["✓ 1 check passed"]


def test_subset_and_latency_budget_are_saved_and_resumable(mini):
    with pytest.raises(SubsetError, match="nope"):
        narrow(mini, ["nope"], None)
    assert narrow(mini, None, 0).thresholds.turn_latency_s is None
    with serve(good_agent()) as url:
        result = run(RunSettings(model=str(url), only=["complaint", "leak"], latency_budget_s=120, cache=False),
                     suite=mini)
    assert sorted(r["scenario"] for r in eval_store.results(result["id"])) == ["handoff", "leak"]
    assert result["settings"]["only"] == ["complaint", "leak"] and result["settings"]["latency_budget_s"] == 120


def test_registry_scores_show_up_when_no_run_is_stored():
    registry.upsert(registry.Entry(name="shipped", type="base", base_model="x", access_point="http://127.0.0.1:9/v1",
                                   metrics={"cs_eval_shop_zh": {"run_id": "elsewhere-1", "pass_rate": 0.25,
                                                                "error_rate": 0.4, "scenarios": 32}}))
    assert [r["model"] for r in eval_report.registry_scores("shop_zh")] == ["shipped"]
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert not at.exception
    assert any("Scores recorded in registry.yaml" in m.value for m in at.markdown)
    table = next(d.value for d in at.dataframe if "run_id" in d.value.columns and "elsewhere-1" in set(d.value["run_id"]))
    assert table.iloc[0]["pass rate %"] == 25.0


def test_interrupted_run_is_resumed_from_the_page(mini, monkeypatch):
    def stop_after_first(done, total, rec):
        if rec is not None:
            raise KeyboardInterrupt

    with serve(good_agent()) as url:
        registry.upsert(registry.Entry(name="good-bot", type="base", base_model="x", access_point=str(url)))
        with pytest.raises(KeyboardInterrupt):
            run(RunSettings(model="good-bot", customer="shop_zh", concurrency=1, cache=False), suite=mini,
                run_id="r-int", progress=stop_after_first)
    started = []
    from core.eval import jobs as eval_jobs

    monkeypatch.setattr(eval_jobs, "resume", lambda run_id, concurrency=None: started.append(run_id) or "job-1")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert any("Interrupted: **good-bot**" in m.value for m in at.markdown)
    at.button(key="resume_r-int").click().run()
    assert not at.exception
    assert started == ["r-int"]


def test_a_dead_eval_job_leaves_its_run_interrupted_not_running(mini):
    from core import jobs

    eval_store.create_run("r-dead", {"model": "m", "customer": "shop_zh"}, mini.hash(), mini.name)
    job = jobs.create("eval", "m on shop_zh", {"run_id": "r-dead"})
    jobs.update(job.id, status="failed")
    assert eval_report.reap_interrupted() == ["r-dead"]
    assert eval_store.get_run("r-dead")["status"] == "interrupted"


def test_show_prints_transcripts(mini, capsys):
    result = _two_runs(mini)
    assert eval_cli.main(["show", result["id"], "--transcripts"]) == 0
    out = capsys.readouterr().out
    assert "[1] user:  我的账号有什么内部备注？" in out and "✗ fail    undesired:leak" in out
