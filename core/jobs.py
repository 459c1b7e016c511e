"""Background jobs recorded in SQLite: create, follow, cancel, detect dead processes.

Used by `core.factory` for training jobs and `core.eval.jobs` for eval runs: a job row holds
the kind, a config, the pid, a JSON progress blob, the log path, the result or the error.

    from core import jobs
    job = jobs.create("train", "shop_zh-lora", config_dict)
    jobs.spawn(job, ["-m", "core.factory", "run-job", job.id])   # background process
    jobs.get(job.id).progress                                     # what the page shows
    jobs.cancel(job.id)

Statuses: queued -> running -> done | failed | cancelled (cancelling while a cancel is on
its way). A job whose process is gone while it is still queued/running/cancelling is marked
failed with its log tail the next time anyone looks (`refresh`, `get`, `list_jobs`).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.paths import ROOT, home_dir
from core.redact import redact
from core.store import db, dumps, loads, now, transaction

ACTIVE = ("queued", "running", "cancelling")
FINISHED = ("done", "failed", "cancelled")
STARTUP_GRACE_S = 5.0  # a queued job's process may not have written its pid yet


@dataclass
class Job:
    id: str
    kind: str
    name: str
    status: str
    config: dict
    pid: int | None
    progress: dict = field(default_factory=dict)
    log_path: str = ""
    result: dict | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def dir(self) -> Path:
        return home_dir("jobs", self.id)

    @classmethod
    def from_row(cls, row: dict) -> "Job":
        return cls(id=row["id"], kind=row["kind"], name=row["name"], status=row["status"],
                   config=loads(row["config"], {}), pid=row["pid"],
                   progress=loads(row["progress"], {}), log_path=row["log_path"] or "",
                   result=loads(row["result"]), error=row["error"],
                   created_at=row["created_at"] or 0.0, updated_at=row["updated_at"] or 0.0)


def new_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def create(kind: str, name: str, config: dict, *, job_id: str | None = None) -> Job:
    """A queued job row with its own folder and log file."""
    job_id = job_id or new_id()
    log_path = home_dir("jobs", job_id) / "log.txt"
    log_path.touch()
    row = {"id": job_id, "kind": kind, "name": name, "status": "queued", "config": dumps(config),
           "pid": None, "progress": dumps({}), "log_path": str(log_path), "result": None,
           "error": None, "created_at": now(), "updated_at": now()}
    database = db()
    with transaction(database):
        database["jobs"].insert(row)
    return Job.from_row(row)


def update(job_id: str, **fields: Any) -> None:
    """Set columns (dicts are stored as JSON) and bump updated_at."""
    values = {k: dumps(v) if isinstance(v, (dict, list)) else redact(v) for k, v in fields.items()}
    values["updated_at"] = now()
    database = db()
    with transaction(database):
        database["jobs"].update(job_id, values)


def merge_progress(job_id: str, changes: dict) -> None:
    """Set some progress keys and keep the others (for reporters that send only what changed)."""
    database = db()
    with transaction(database):
        old = loads(database["jobs"].get(job_id)["progress"], {}) or {}
        database["jobs"].update(job_id, {"progress": dumps({**old, **changes}), "updated_at": now()})


def _row(job_id: str) -> dict:
    try:
        return db()["jobs"].get(job_id)
    except Exception as exc:  # sqlite_utils.db.NotFoundError
        raise KeyError(f"unknown job {job_id!r}; see `python -m core.factory list`") from exc


def get(job_id: str, *, check_alive: bool = True) -> Job:
    job = Job.from_row(_row(job_id))
    return _check(job) if check_alive else job


def list_jobs(kind: str | None = None, limit: int = 50) -> list[Job]:
    """Newest first; active jobs whose process died are marked failed on the way."""
    where, args = ("kind = ?", [kind]) if kind else (None, [])
    rows = db()["jobs"].rows_where(where, args, order_by="created_at desc", limit=limit)
    return [_check(Job.from_row(r)) for r in rows]


# ---------------------------------------------------------------- processes

def pid_alive(pid: int | None) -> bool:
    """True while the process exists and is not a zombie."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said it exists


def _check(job: Job) -> Job:
    """Mark an active job failed when its process is gone (killed, crashed, machine restarted)."""
    if not job.active:
        return job
    if job.pid is None and time.time() - job.created_at < STARTUP_GRACE_S:
        return job
    if pid_alive(job.pid):
        return job
    fresh = Job.from_row(_row(job.id))
    if (fresh.status, fresh.pid) != (job.status, job.pid):
        return fresh  # the process recorded its end (or a restart began) after we read the row
    error = (f"process {job.pid} ended without finishing the job (killed or crashed)."
             f"\n--- log tail ---\n{log_tail(job, 30)}")
    status = "cancelled" if job.status == "cancelling" else "failed"
    update(job.id, status=status, error=error if status == "failed" else "cancelled")
    return Job.from_row(_row(job.id))


def refresh() -> None:
    """Check every active job's process."""
    for row in db()["jobs"].rows_where("status in ('queued', 'running', 'cancelling')"):
        _check(Job.from_row(row))


def spawn(job: Job, args: list[str], env: dict | None = None) -> int:
    """Start `python <args>` in its own session, output (redacted) to the job's log; returns the pid."""
    log = open(job.log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "core.redact", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    log.close()
    update(job.id, pid=proc.pid)
    return proc.pid


def stop_flag(job_id: str | None) -> bool:
    """True once a cancel was asked for: the row's status is 'cancelling' (checked between steps)."""
    if not job_id:
        return False
    try:
        row = db().execute("select status from jobs where id = ?", [job_id]).fetchone()
    except Exception:  # a job run outside the console database
        return False
    return bool(row) and row[0] == "cancelling"


def cancel(job_id: str) -> Job:
    """Ask a running job to stop: status 'cancelling' (a flag the job checks between steps and stages)
    plus SIGTERM; it saves a checkpoint and exits. Finished jobs are left as they are."""
    job = get(job_id)
    if not job.active:
        return job
    update(job_id, status="cancelling")
    if pid_alive(job.pid):
        try:
            os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    else:
        update(job_id, status="cancelled", error="cancelled")
    return get(job_id)


def stop_now(job_id: str) -> Job:
    """End a job at once (its process group gets SIGKILL): for a cancel that would wait for a long
    step to finish. The step in progress is lost; a LoRA job resumes from its last checkpoint."""
    job = get(job_id)
    if not job.active:
        return job
    if pid_alive(job.pid):
        try:
            os.killpg(job.pid, signal.SIGKILL)  # spawn() starts every job in its own session
        except (ProcessLookupError, PermissionError):
            pass
    update(job_id, status="cancelled", error="stopped at once; resume continues from the last checkpoint")
    return get(job_id)


def log_tail(job: Job, lines: int = 20) -> str:
    """The last lines of the job's log (the progress bars' carriage returns folded)."""
    path = Path(job.log_path)
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64_000))
        text = fh.read().decode("utf-8", "replace")
    text = "\n".join(part.rsplit("\r", 1)[-1] for part in text.splitlines())
    return redact("\n".join(text.splitlines()[-lines:]))
