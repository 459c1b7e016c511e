"""Cancelling a training job: a stop flag in the job row, checked between steps and stages."""
from __future__ import annotations

import threading
import time

import pytest

from core import factory, jobs
from tests.helpers_llm import tiny_model_dir


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CSFORGE_REGISTRY", str(tmp_path / "registry.yaml"))


def _job(**lora):
    cfg = factory.make_config({
        "customer": "shop_zh", "base_model": str(tiny_model_dir()), "name": "cancel-me", "epochs": 50,
        "max_conversations": 10, "include_context": False, "val_fraction": 0.2,
        "lora": {"warmup_steps": 0, "max_seq_len": 256, "batch_size": 2, **lora}})
    return jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))


def test_flag_alone_stops_training_within_seconds():
    """No signal at all (a lost SIGTERM, a job on another host): the 'cancelling' row stops it."""
    job = _job()
    worker = threading.Thread(target=factory.execute, args=(job.id,))  # not the main thread: no signal handler
    worker.start()
    deadline = time.time() + 180
    while (jobs.get(job.id, check_alive=False).progress.get("step") or 0) < 1:
        assert time.time() < deadline and worker.is_alive(), jobs.get(job.id, check_alive=False).error
        time.sleep(0.2)
    asked = time.time()
    jobs.update(job.id, status="cancelling")
    worker.join(60)
    took = time.time() - asked
    assert not worker.is_alive()
    done = jobs.get(job.id, check_alive=False)
    assert done.status == "cancelled", done.error
    assert took < 10, f"cancel took {took:.1f} s"
    assert done.progress["step"] < done.progress["total"]


def test_cancel_between_stages_and_before_start():
    queued = _job()
    jobs.update(queued.id, status="cancelling")
    assert factory.execute(queued.id) == 3 and jobs.get(queued.id, check_alive=False).status == "cancelled"
    job = _job()
    jobs.update(job.id, status="cancelling")
    with pytest.raises(factory.JobCancelled, match="tokenising"):
        factory.Progress(job.id)(stage="tokenising")
    factory.Progress(job.id)(stage="writing report")  # results exist by then: never thrown away


def test_stop_now_ends_a_job_stuck_in_a_long_step():
    """A process that ignores SIGTERM and never reaches a step boundary (a long step on a busy CPU)."""
    job = jobs.create(factory.KIND, "long-step", {})
    pid = jobs.spawn(job, ["-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('started', flush=True); time.sleep(120)"])
    jobs.update(job.id, status="running")
    deadline = time.monotonic() + 30
    while "started" not in jobs.log_tail(jobs.get(job.id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.cancel(job.id).status == "cancelling"
    time.sleep(1.0)
    assert jobs.pid_alive(pid), "SIGTERM is ignored: only the flag is left, read at the next step"
    t0 = time.monotonic()
    stopped = jobs.stop_now(job.id)
    while jobs.pid_alive(pid) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert not jobs.pid_alive(pid) and time.monotonic() - t0 < 5
    assert stopped.status == "cancelled" and "last checkpoint" in stopped.error
    assert jobs.stop_now(job.id).status == "cancelled"  # a second click changes nothing
