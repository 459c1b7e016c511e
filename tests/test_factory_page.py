"""Factory page through Streamlit's AppTest: launch a job, follow it, see the registry and report."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import factory, jobs, registry
from tests.helpers_llm import tiny_model_dir

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Factory.py")


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CSFORGE_REGISTRY", str(tmp_path / "registry.yaml"))


def test_factory_page_launches_a_job_and_shows_it():
    tiny = str(tiny_model_dir())
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    at.selectbox(key="factory_customer").set_value("shop_zh")
    at.radio(key="method").set_value("prompt")
    at.text_input(key="base_model").set_value(tiny)
    at.text_input(key="name").set_value("page-prompt")
    at.button[0].click()  # the form's Launch button
    at.run()
    assert not at.exception
    assert any("Started job" in s.value for s in at.success)
    job_id = at.session_state["factory_job"]
    deadline = time.time() + 120
    while jobs.get(job_id).active:
        assert time.time() < deadline
        time.sleep(0.5)
    job = jobs.get(job_id)
    assert job.status == "done", job.error
    assert job.config["method"] == "prompt" and job.config["base_model"] == tiny
    entry = registry.get("page-prompt")
    assert entry.type == "prompt"

    at = AppTest.from_file(PAGE, default_timeout=60).run()  # a reload still shows the job and the model
    assert not at.exception
    assert "page-prompt" in list(at.dataframe[0].value["name"])
    assert at.selectbox(key="past_job").value == job_id
    assert any("Extra prompt tokens per call" in m.value for m in at.markdown)
    # the report's links to files beside it are downloads, not links that 404 in the browser
    assert "⬇ prompt_template.md" in [b.proto.label for b in at.get("download_button")]
    assert not any("](prompt_template.md)" in m.value for m in at.markdown)


def test_factory_page_shows_a_running_job_with_progress():
    job = jobs.create(factory.KIND, "live-one", {"method": "lora", "customer": "shop_zh"})
    jobs.spawn(job, ["-c", "import time; time.sleep(120)"])  # stands in for a training process
    jobs.update(job.id, status="running",
                progress={"stage": "training", "step": 5, "total": 20, "train": [[1, 2.0], [5, 1.5]],
                          "val": [[5, 1.7]], "tokens_per_s": 321.0, "eta_s": 42.0})
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["train loss"] == "1.5000" and values["val loss"] == "1.7000"
    assert values["tokens/s"] == "321" and values["ETA"] == "42 s"
    at.button(key=f"cancel_{job.id}").click().run()
    deadline = time.time() + 30
    while jobs.get(job.id).status != "cancelled":  # SIGTERM ended the process; the next look records it
        assert time.time() < deadline
        time.sleep(0.2)
