"""Per-run adjustments of a suite: a subset of scenarios or categories, a latency budget.

    RunSettings(model="m", customer="shop_zh", only=["complaint", "zh-new-size-advice"], latency_budget_s=120)

Both are saved with the run's settings, so a resumed run plays the same subset under the same
budget (and the suite hash, computed after narrowing, matches).
"""
from __future__ import annotations


class SubsetError(ValueError):
    """`only` names nothing in the suite."""


def narrow(suite, only: list[str] | None, latency_budget_s: float | None):
    """The suite limited to scenarios whose id or category is in `only`, with the run's latency budget.

    latency_budget_s: None keeps the suite's; 0 or less switches the latency check off."""
    if only:
        wanted = set(only)
        kept = [s for s in suite.scenarios if s.id in wanted or s.category in wanted]
        unknown = wanted - {s.id for s in suite.scenarios} - {s.category for s in suite.scenarios}
        if not kept or unknown:
            raise SubsetError(f"--only: {', '.join(sorted(unknown)) or ', '.join(only)} matches no scenario id or "
                              f"category of suite {suite.name}")
        suite = suite.model_copy(update={"scenarios": kept})
    if latency_budget_s is not None:
        thresholds = suite.thresholds.model_copy(update={"turn_latency_s": latency_budget_s if latency_budget_s > 0
                                                          else None})
        suite = suite.model_copy(update={"thresholds": thresholds})
    return suite
