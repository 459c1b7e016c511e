"""SQLite state shared by the console: jobs, eval runs and results, sandbox chats and flags.

One file, $CSFORGE_HOME/csforge.db, in WAL mode so the Streamlit pages, background jobs and
CLI runs can read while one of them writes. Each module keeps its own queries next to its
logic and uses `db()` plus the table names below; this file only owns the schema.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

from core.paths import home
from core.redact import redact_obj

SCHEMA: dict[str, dict[str, Any]] = {
    # Background work started from a page or the CLI (training jobs, eval runs).
    "jobs": dict(
        columns={"id": str, "kind": str, "name": str, "status": str, "config": str, "pid": int,
                 "progress": str, "log_path": str, "result": str, "error": str,
                 "created_at": float, "updated_at": float},
        pk="id",
    ),
    "eval_runs": dict(
        columns={"id": str, "model": str, "customer": str, "suite_hash": str, "settings": str,
                 "status": str, "summary": str, "created_at": float, "finished_at": float},
        pk="id",
    ),
    # The process that plays a run (set at start and at each resume): a dead one means interrupted.
    "eval_run_owners": dict(
        columns={"run_id": str, "pid": int, "host": str, "proc_start": str, "claimed_at": float},
        pk="run_id",
    ),
    "eval_results": dict(
        columns={"id": str, "run_id": str, "scenario": str, "category": str, "passed": int,
                 "transcript": str, "checks": str, "latency_s": float, "cost_usd": float,
                 "input_tokens": int, "output_tokens": int, "glitches": int, "agent_turns": int,
                 "error": str, "created_at": float},
        pk="id",
        foreign_keys=[("run_id", "eval_runs", "id")],
    ),
    "sandbox_sessions": dict(
        columns={"id": str, "models": str, "customer": str, "title": str, "rating": int,
                 "tester": str, "created_at": float, "updated_at": float},
        pk="id",
    ),
    "sandbox_messages": dict(
        columns={"id": str, "session_id": str, "model": str, "seq": int, "role": str,
                 "content": str, "latency_s": float, "input_tokens": int, "output_tokens": int,
                 "cost_usd": float, "error": str, "created_at": float},
        pk="id",
        foreign_keys=[("session_id", "sandbox_sessions", "id")],
    ),
    "flags": dict(
        columns={"id": str, "session_id": str, "message_id": str, "model": str, "category": str,
                 "comment": str, "created_at": float},
        pk="id",
        foreign_keys=[("message_id", "sandbox_messages", "id")],
    ),
}

INDEXES = [
    ("eval_results", ["run_id"]),
    ("sandbox_messages", ["session_id", "seq"]),
    ("flags", ["message_id"]),
    ("jobs", ["kind", "created_at"]),
]


_READY: set[Path] = set()  # databases whose schema and WAL mode this process already checked


def db() -> sqlite_utils.Database:
    """Open the console database (schema created and WAL enabled once per process and file)."""
    path = home() / "csforge.db"
    fresh = path not in _READY or not path.exists()  # checked before connecting creates the file
    database = sqlite_utils.Database(path)
    database.execute("PRAGMA busy_timeout = 10000")
    if fresh:
        if database.journal_mode != "wal":
            database.enable_wal()
        _ensure_schema(database)
        _READY.add(path)
    return database


def _ensure_schema(database: sqlite_utils.Database) -> None:
    existing = set(database.table_names())
    for name, spec in SCHEMA.items():
        if name not in existing:
            database[name].create(spec["columns"], pk=spec["pk"],
                                  foreign_keys=spec.get("foreign_keys"), if_not_exists=True)
    for table, columns in INDEXES:
        database[table].create_index(columns, if_not_exists=True)


@contextmanager
def transaction(database: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """All-or-nothing writes: a failure leaves what was stored before untouched."""
    with database.conn:
        yield database


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    """JSON for TEXT columns, secrets redacted (core.redact); keeps Chinese readable in the file."""
    return json.dumps(redact_obj(value), ensure_ascii=False, default=str)


def loads(text: str | None, default: Any = None) -> Any:
    return default if not text else json.loads(text)
