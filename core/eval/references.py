"""Every scenario's reference replies must pass its own checks.

    python -m core.eval validate [--customer NAME]     # suites load, and their references pass

A suite documents one good reply per turn (`reference`). Played in-process through exactly
the checks a run uses (no agent, no network), a reference that fails shows a check that would
fail good agents too, or a reference that is itself wrong; both must be fixed before a run's
verdicts mean anything. The shipped clients are held to it by the tests, and a new client's
suite by `validate`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReferenceFailure:
    scenario: str
    turn: int | None  # None: a conversation check
    check: str
    reason: str

    def __str__(self) -> str:
        where = f"turn {self.turn + 1}" if self.turn is not None else "conversation"
        return f"{self.scenario} · {where} · {self.check}: {self.reason}"


class ScriptedReplies:
    """An in-process agent whose reply to the n-th user message is replies[n - 1]
    (reference plays here, calibration plays in core.eval.calibrate)."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def __call__(self, model: str, messages: list[dict], context: dict | None = None, max_tokens: int | None = None):
        from core.llm import Completion

        n = sum(1 for m in messages if m.get("role") == "user")
        return Completion(text=self.replies[n - 1], model=model)


def check_references(suite, customer: str | None = None) -> tuple[int, list[ReferenceFailure]]:
    """(scenarios played, failed checks) for every scenario whose turns all carry a reference."""
    from core.eval import runner

    settings = runner.RunSettings(model="references", customer=customer, concurrency=1, cache=False)
    env = runner.make_env(suite, settings, runner.Caller(settings))
    played, failures = 0, []
    for sc in suite.scenarios:
        if not sc.turns or not all(t.reference for t in sc.turns):
            continue
        scripted = sc.model_copy(update={"simulate": None})
        rec = runner.ScenarioRun(scripted, suite, settings, ScriptedReplies([t.reference for t in sc.turns]), env).play()
        played += 1
        failures += [ReferenceFailure(sc.id, c.get("turn"), c["name"], c.get("reason") or "")
                     for c in rec["checks"] if c["passed"] is False]
    return played, failures
