"""Which process plays an eval run, and whether it is still alive.

A run records its owner (pid, host, the process's start time) when it starts and when it is
resumed. A run still marked "running" whose owner on this host has died (SIGKILL, OOM, a
closed terminal) was interrupted: `reap()` marks it so, and the Scorecard and `eval show` call
it before reading runs. The start time guards against a recycled pid; a run owned by another
host is left alone (its process cannot be checked from here).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def me() -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": proc_start(pid)}


def owner_alive(owner: dict) -> bool:
    """False only when the owner ran on this host and is gone (or its pid now names another process)."""
    from core.jobs import pid_alive

    if owner.get("host") != socket.gethostname():
        return True
    if not pid_alive(owner.get("pid")):
        return False
    return not owner.get("proc_start") or proc_start(owner["pid"]) in ("", owner["proc_start"])


def dead_runs() -> list[str]:
    """Runs marked running whose recorded owner process is dead."""
    from core import store

    rows = store.db().query("select o.* from eval_runs r join eval_run_owners o on o.run_id = r.id "
                            "where r.status = 'running'")
    return [row["run_id"] for row in rows if not owner_alive(row)]
