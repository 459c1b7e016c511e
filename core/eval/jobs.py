"""Eval runs as background jobs: the Scorecard starts `python -m core.eval run ...` as a process,
recorded in the jobs table; the process reports progress there; a dead process is marked failed.

The mechanics (pid, log, dead-process detection, SIGTERM) are `core.jobs`; this module adds the
eval command line and the eval statuses: running -> finished | failed | interrupted."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict

from core import jobs

KIND = "eval"


def start(model: str, customer: str | None, suite_path: str | None = None, concurrency: int = 8,
          judge: str | None = None, extra: list[str] | None = None) -> str:
    """Pre-flight, then launch an eval run in the background; returns the job id (run id in its progress).

    Raises preflight.PreflightError (nothing recorded) when the model cannot be called or the suite
    does not load."""
    from core import preflight
    from core.eval.runner import new_run_id

    preflight.require(preflight.eval_run(model, customer, suite_path))

    job_id = jobs.new_id()
    run_id = new_run_id(model)
    args = ["-m", "core.eval", "run", "--model", model, "--concurrency", str(concurrency),
            "--job", job_id, "--run-id", run_id]
    args += ["--customer", customer] if customer else []
    args += ["--suite", suite_path] if suite_path else []
    args += ["--judge", judge] if judge else []
    args += extra or []
    return _launch(job_id, f"{model} on {customer or 'generic'}", args, run_id)


def start_tasks(model: str, customer: str, trials: int = 1, split: str | None = None,
                simulator: str | None = None, concurrency: int = 8, tasks: list[str] | None = None) -> str:
    """Pre-flight, then launch a task run (tools, simulated customer, pass^k) in the background.

    Reference agents (`@oracle`) need no pre-flight; a model that cannot be called raises
    preflight.PreflightError with nothing recorded."""
    from core import preflight
    from core.eval import tasks as tk

    if not tk.has_tasks(customer):
        raise preflight.PreflightError([preflight.Problem(
            f"{customer} has no tasks", f"add customers/{customer}/tasks.yaml (or tasks.py) and tools.py")])
    if not 1 <= trials <= tk.MAX_TRIALS:
        raise preflight.PreflightError([preflight.Problem(
            f"trials must be between 1 and {tk.MAX_TRIALS}, not {trials}", "pick fewer trials")])
    problems = [] if model.strip().startswith("@") else preflight.model_callable(model)
    if simulator:
        problems += preflight.model_callable(simulator)
    preflight.require(problems)
    job_id = jobs.new_id()
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-tasks-{job_id[-4:]}"
    args = ["-m", "core.eval", "run", "--customer", customer, "--model", model.strip(), "--trials", str(trials),
            "--concurrency", str(concurrency), "--job", job_id, "--run-id", run_id]
    args += ["--split", split] if split else []
    args += ["--simulator", simulator] if simulator else []
    for task_id in tasks or []:
        args += ["--task", task_id]
    return _launch(job_id, f"tasks: {model} on {customer} x{trials}", args, run_id, unit="trials")


def _launch(job_id: str, name: str, args: list[str], run_id: str, unit: str = "scenarios") -> str:
    job = jobs.create(KIND, name, {"cmd": [sys.executable, *args], "run_id": run_id}, job_id=job_id)
    jobs.update(job_id, status="running", progress={"done": 0, "total": None, "run_id": run_id, "unit": unit})
    jobs.spawn(job, args, env={"HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    return job_id


def resume(run_id: str, concurrency: int | None = None) -> str:
    """Finish an interrupted run in the background (`python -m core.eval run --resume RUN_ID`)."""
    job_id = jobs.new_id()
    args = ["-m", "core.eval", "run", "--resume", run_id, "--job", job_id]
    args += ["--concurrency", str(concurrency)] if concurrency else []
    return _launch(job_id, f"resume {run_id}", args, run_id)


def update(job_id: str | None, *, progress: dict | None = None, **fields) -> None:
    """Set columns; `progress` keys are merged into the stored progress. No job id: nothing to do."""
    if not job_id:
        return
    if progress is not None:
        jobs.merge_progress(job_id, progress)
    if fields:
        jobs.update(job_id, **fields)


def finish(job_id: str | None, status: str, result: dict | None = None, error: str | None = None) -> None:
    update(job_id, status=status, result=result or None, error=error)


def _as_dict(job: jobs.Job) -> dict:
    return {**asdict(job), "log_tail": jobs.log_tail(job, 15)}


def status(job_id: str) -> dict | None:
    """The job with decoded progress and log tail; a running job whose process is gone becomes failed."""
    try:
        return _as_dict(jobs.get(job_id))
    except KeyError:
        return None


def recent(limit: int = 10) -> list[dict]:
    return [_as_dict(job) for job in jobs.list_jobs(KIND, limit=limit)]


def stop(job_id: str) -> None:
    """Ask a running eval to stop (it records 'interrupted' and can be resumed)."""
    jobs.cancel(job_id)
