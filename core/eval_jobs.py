"""Eval runs as background jobs: the Scorecard starts `python -m core.eval run ...` as a process,
recorded in the jobs table; the process reports progress there; a dead process is marked failed."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from core import store
from core.paths import ROOT, home_dir

KIND = "eval"


def start(model: str, customer: str | None, suite_path: str | None = None, concurrency: int = 8,
          judge: str | None = None, extra: list[str] | None = None) -> str:
    """Launch an eval run in the background; returns the job id (the run id is in its progress)."""
    from core.eval_runner import new_run_id

    job_id = uuid.uuid4().hex[:12]
    run_id = new_run_id(model)
    cmd = [sys.executable, "-m", "core.eval", "run", "--model", model, "--concurrency", str(concurrency),
           "--job", job_id, "--run-id", run_id]
    cmd += ["--customer", customer] if customer else []
    cmd += ["--suite", suite_path] if suite_path else []
    cmd += ["--judge", judge] if judge else []
    cmd += extra or []
    log_path = home_dir("logs") / f"eval-{job_id}.log"
    db = store.db()
    with store.transaction(db):
        db["jobs"].insert({"id": job_id, "kind": KIND, "name": f"{model} on {customer or 'generic'}",
                           "status": "running", "config": store.dumps({"cmd": cmd, "run_id": run_id}),
                           "pid": None, "progress": store.dumps({"done": 0, "total": None, "run_id": run_id}),
                           "log_path": str(log_path), "result": None, "error": None,
                           "created_at": time.time(), "updated_at": time.time()})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    update(job_id, pid=proc.pid)
    return job_id


def update(job_id: str | None, *, progress: dict | None = None, **fields) -> None:
    if not job_id:
        return
    db = store.db()
    if progress is not None:
        old = store.loads(get(job_id).get("progress") if get(job_id) else None, {}) or {}
        fields["progress"] = store.dumps({**old, **progress})
    fields["updated_at"] = time.time()
    with store.transaction(db):
        db["jobs"].update(job_id, fields)


def finish(job_id: str | None, status: str, result: dict | None = None, error: str | None = None) -> None:
    update(job_id, status=status, result=store.dumps(result) if result else None, error=error)


def get(job_id: str) -> dict | None:
    rows = list(store.db().query("select * from jobs where id = ?", [job_id]))
    return rows[0] if rows else None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a finished child not yet reaped is a zombie: not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(job_id: str) -> dict | None:
    """The job with decoded progress and log tail; a running job whose process is gone becomes failed."""
    job = get(job_id)
    if job is None:
        return None
    if job["status"] == "running" and job["pid"] and not _alive(job["pid"]):
        time.sleep(0.2)  # the process may be writing its final status right now
        job = get(job_id)
        if job["status"] == "running":
            finish(job_id, "failed", error="the eval process exited without finishing; see its log")
            job = get(job_id)
    job["progress"] = store.loads(job["progress"], {})
    job["result"] = store.loads(job["result"], None)
    job["log_tail"] = log_tail(job["log_path"])
    return job


def log_tail(path: str | None, lines: int = 15) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def recent(limit: int = 10) -> list[dict]:
    rows = store.db().query("select id from jobs where kind = ? order by created_at desc limit ?", [KIND, limit])
    return [status(r["id"]) for r in rows]


def stop(job_id: str) -> None:
    """Ask a running eval to stop (it records 'interrupted' and can be resumed)."""
    job = get(job_id)
    if job and job["pid"] and _alive(job["pid"]):
        os.kill(job["pid"], 15)
