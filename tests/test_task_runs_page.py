"""Task runs (tools, pass^k) started from the Scorecard's Run tab as background jobs."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "4_Scorecard.py")


@pytest.fixture(autouse=True)
def tmp_registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))


def _wait(job_id: str, timeout: float = 120.0) -> dict:
    from core.eval import jobs as eval_jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        job = eval_jobs.status(job_id)
        if job["status"] not in ("running", "pending"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running: {eval_jobs.status(job_id)}")


def test_task_run_starts_from_the_run_tab_and_shows_progress_and_pass_hat():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    at.selectbox(key="trun_model").set_value("@oracle")
    at.slider(key="trun_trials").set_value(2)
    at.slider(key="trun_conc").set_value(2)
    next(b for b in at.button if b.label == "Start task run").click().run()
    assert not at.exception
    started = [s.value for s in at.success if "Started task job" in s.value]
    assert started, [e.value for e in at.error]
    job = _wait(started[0].split("job ")[1].split(";")[0])
    assert job["status"] == "finished", job["log_tail"]
    assert job["progress"]["done"] == job["progress"]["total"] == 10  # 5 shop_zh tasks x 2 trials
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert any(p.proto.text == "10/10 trials" for p in at.get("progress"))
    runs = next(d.value for d in at.dataframe if "pass^2" in d.value.columns)
    assert list(runs["model"]) == ["@oracle"] and runs.iloc[0]["pass^2"] == 1.0 and runs.iloc[0]["trials"] == 2


def test_task_run_refuses_an_uncallable_model_and_a_client_without_tasks():
    from core import preflight
    from core.eval import jobs as eval_jobs

    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    at.text_input(key="trun_typed").input("no-such-model")
    next(b for b in at.button if b.label == "Start task run").click().run()
    assert any("unknown model 'no-such-model'" in e.value for e in at.error)
    assert eval_jobs.recent() == []
    with pytest.raises(preflight.PreflightError, match="twitter_care has no tasks"):
        eval_jobs.start_tasks("@oracle", "twitter_care")
    at.sidebar.selectbox[0].set_value("twitter_care").run()
    assert not any(b.label == "Start task run" for b in at.button)


def test_interrupted_task_run_is_resumed_from_the_run_tab_playing_only_the_missing_trials():
    from core.eval import store as es
    from core.eval import tasks as tk

    seen = []

    def stop_after_two(done, total, rec):
        seen.append(rec["scenario"])
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tk.run_tasks(tk.TaskSettings(model="@oracle", customer="shop_zh", concurrency=1), run_id="t-int",
                     progress=stop_after_two)
    assert es.get_run("t-int")["status"] == "interrupted" and es.done_scenarios("t-int") == set(seen)
    first = {r["scenario"]: r["created_at"] for r in es.results("t-int")}
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    assert any("Interrupted: **@oracle** · `t-int` · 2 scenarios done" in m.value for m in at.markdown)
    at.button(key="resume_t-int").click().run()
    assert not at.exception
    from core.eval import jobs as eval_jobs

    job = _wait(next(j["id"] for j in eval_jobs.recent() if j["name"] == "resume t-int"))
    assert job["status"] == "finished", job["log_tail"]
    assert job["progress"]["total"] == 5 and job["progress"]["done"] == 5
    run = es.get_run("t-int")
    assert run["status"] == "finished" and run["summary"]["scenarios"] == 5 and run["summary"]["pass_hat"]["1"] == 1.0
    again = {r["scenario"]: r["created_at"] for r in es.results("t-int")}
    assert all(again[s] == first[s] for s in first)  # the two stored trials were not replayed


def test_eval_show_prints_pass_hat_for_a_task_run(capsys):
    from core.eval import cli as eval_cli
    from core.eval import tasks as tk

    tk.run_tasks(tk.TaskSettings(model="@oracle", customer="shop_zh", trials=2, concurrency=2), run_id="t-show")
    assert eval_cli.main(["show", "t-show"]) == 0
    out = capsys.readouterr().out
    assert "5 tasks x 2 trials  pass^1 100.0%  pass^2 100.0%" in out
