"""Jobs on the pages: a cancelling job says so (no second Cancel), a failed job shows its reason
once and no useless Resume, the release gate starts missing runs in the background."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import factory, jobs, registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))


def test_cancelling_job_shows_its_state_and_no_cancel_button():
    job = jobs.create(factory.KIND, "stopping", {"method": "lora", "customer": "shop_zh"})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        jobs.update(job.id, status="cancelling", pid=proc.pid, progress={"stage": "training", "step": 2, "total": 9})
        at = AppTest.from_file(str(ROOT / "pages/2_Factory.py"), default_timeout=60).run()
        assert not at.exception
        assert any("Cancelling" in i.value for i in at.info)
        assert not [b for b in at.button if b.key == f"cancel_{job.id}"]
    finally:
        proc.kill()
        proc.wait()


def test_failed_job_shows_the_reason_once_and_no_resume_without_a_checkpoint():
    job = jobs.create(factory.KIND, "broken", {"method": "lora", "customer": "shop_zh"})
    jobs.update(job.id, status="failed", error="BackendError: no training example fits\n\nTraceback (most recent call last):\n  ...")
    at = AppTest.from_file(str(ROOT / "pages/2_Factory.py"), default_timeout=60).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors.count("BackendError: no training example fits") == 1
    assert not any("Traceback" in e for e in errors)
    assert not [b for b in at.button if b.key == f"resume_{job.id}"]
    (job.dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    at = AppTest.from_file(str(ROOT / "pages/2_Factory.py"), default_timeout=60).run()
    assert [b for b in at.button if b.key == f"resume_{job.id}"]


def test_release_gate_on_the_page_starts_missing_runs_instead_of_blocking(monkeypatch):
    from core.eval import jobs as eval_jobs

    registry.upsert(registry.Entry(name="cand", type="base", base_model="x", access_point="http://127.0.0.1:9/v1",
                                   customer="shop_zh", status="candidate"))
    started = []
    monkeypatch.setattr(eval_jobs, "start", lambda model, customer, *a, **k: started.append((model, customer)) or "j1")
    at = AppTest.from_file(str(ROOT / "pages/4_Scorecard.py"), default_timeout=60).run()
    at.sidebar.selectbox[0].set_value("shop_zh").run()
    at.button(key="gate_go").click().run()
    assert not at.exception
    assert any("cand has no finished run" in e.value for e in at.error)
    assert started == [("cand", "shop_zh")]
    assert any("Promotion refused" in w.value for w in at.warning)
    assert registry.get("cand").status == "candidate"


def test_stop_now_on_a_cancelling_job_ends_it_from_the_page():
    job = jobs.create(factory.KIND, "slow-step", {"method": "lora", "customer": "shop_zh"})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        jobs.update(job.id, status="cancelling", pid=proc.pid, progress={"stage": "training", "step": 1, "total": 40})
        at = AppTest.from_file(str(ROOT / "pages/2_Factory.py"), default_timeout=60).run()
        at.button(key=f"stop_now_{job.id}").click().run()
        assert not at.exception
        assert proc.wait(timeout=5) == -9  # SIGKILL
        assert jobs.get(job.id).status == "cancelled"
        assert not [b for b in at.button if b.key == f"stop_now_{job.id}"]
    finally:
        proc.kill()
        proc.wait()
