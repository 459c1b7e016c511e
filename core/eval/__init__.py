"""CS eval: scenario suites (suite), checks (checks, text), the runner (runner), stored runs
(store), scorecards and diffs (report), the release gate (gate), the human loop (loop) and
background runs (jobs). Agents that act: tool environments (tools), task scenarios and pass^k
(tasks, judge_task, agents, task_cli) and their views (tools_view).
`python -m core.eval --help` is the CLI (core/eval/cli.py).

Importing the package is cheap; the public names below load their module on first use.
"""
from __future__ import annotations

_PUBLIC = {"RunSettings": "runner", "run": "runner", "SuiteError": "suite", "load_suite": "suite",
           "main": "cli", "scorecard_text": "cli"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib
        return getattr(importlib.import_module(f"core.eval.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'core.eval' has no attribute {name!r}")
