"""Model retirement: when a model stops answering, and a live model of the same provider at a similar price.

    python -m core.registry validate     # prints a warning per registry entry that retires within 30 days

Dates come from the curated price rows (core/prices/*.yaml `retires`, which override) and from LiteLLM's
cost map (`deprecation_date`). A replacement is picked among the curated candidates of the same
provider, else among the map's chat models of that provider: live (no retirement within 30 days;
one without an announced date within half a year is preferred), with the closest blended price.
The pages show `show(entries)` wherever a model is picked; nothing here raises on a page.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable

from core.prices.costmap import CostMap, load_cost_map
from core.prices.rows import CandidateRow, FinetuneRow, load_candidates, load_finetune

SOON_DAYS = 30  # warn this many days ahead: enough to evaluate and switch a client's agent
STABLE_DAYS = 180  # a replacement that itself retires within half a year is suggested only when nothing else fits
# previews, experiments and snapshots are not suggested from the raw map (the curated list has none)
_UNSTABLE = re.compile(r"preview|exp|-\d{2}-\d{4}|-\d{4}-\d{2}-\d{2}|\d{4}$", re.I)
INPUT_WEIGHT = 3  # blended price = (3 × input + output) / 4: a support agent reads far more than it writes


def blended(in_per_1m: float, out_per_1m: float) -> float:
    """One price per model for comparing (input-heavy 3:1 blend, as Artificial Analysis uses)."""
    return (INPUT_WEIGHT * in_per_1m + out_per_1m) / (INPUT_WEIGHT + 1)


def _today(today: date | None) -> date:
    return today or datetime.now(timezone.utc).date()


@dataclass(frozen=True)
class Replacement:
    model: str  # LiteLLM model string, usable as an access point
    label: str  # display name
    in_per_1m: float
    out_per_1m: float
    retires: date | None

    def describe(self) -> str:
        name = self.model if self.label == self.model else f"{self.model} ({self.label})"
        return f"{name} at ${self.in_per_1m:.2f}/${self.out_per_1m:.2f} per 1M in/out"


@dataclass(frozen=True)
class RetirementWarning:
    """A registry entry whose model retires within SOON_DAYS or has retired."""

    name: str
    access_point: str
    retires: date
    days_left: int  # negative: retired that many days ago
    prices: tuple[float, float] | None
    replacement: Replacement | None

    @property
    def retired(self) -> bool:
        return self.days_left <= 0

    def message(self) -> str:
        when = (f"retired on {self.retires} ({-self.days_left} days ago): calls to it fail" if self.retired
                else f"retires on {self.retires} (in {self.days_left} day{'s' if self.days_left != 1 else ''})")
        now = f" (now ${self.prices[0]:.2f}/${self.prices[1]:.2f})" if self.prices else ""
        then = (f"suggested replacement, same provider, similar price: {self.replacement.describe()}{now}"
                if self.replacement else "no live model of the same provider found in the price lists")
        return f"{self.name} ({self.access_point}) {when}; {then}."


@dataclass
class Lifecycle:
    """Retirement dates and replacements from one cost map and the curated rows."""

    cost_map: CostMap
    candidates: list[CandidateRow]
    finetune: list[FinetuneRow]

    @classmethod
    def load(cls) -> "Lifecycle":
        return cls(load_cost_map(), load_candidates()[1], load_finetune()[1])

    def retires(self, model: str) -> date | None:
        """The model's shutdown date: a curated row's `retires`, else the map's deprecation_date."""
        key = self.cost_map.key_for(model) or model
        for row in self.candidates:
            if row.litellm_model in (model, key) and row.retires:
                return row.retires
        for row in self.finetune:
            if row.litellm_model and row.litellm_model in (model, key) and row.retires:
                return row.retires
        return self.cost_map.deprecation(model)

    def prices(self, model: str) -> tuple[float, float] | None:
        for row in self.candidates:
            if row.litellm_model == model and row.input_per_1m is not None and row.output_per_1m is not None:
                return row.input_per_1m, row.output_per_1m
        return self.cost_map.lookup(model)

    def _live(self, model: str, today: date) -> tuple[bool, date | None]:
        when = self.retires(model)
        return when is None or (when - today).days > SOON_DAYS, when

    def _pool(self, provider: str, today: date) -> list[Replacement]:
        """Live models of a provider: curated candidates first; the whole map only when none is curated."""
        curated = [(r.litellm_model, r.model) for r in self.candidates
                   if self.cost_map.provider(r.litellm_model) == provider]
        mapped = [(k, k) for k, v in self.cost_map.models.items()
                  if isinstance(v, dict) and v.get("litellm_provider") == provider and v.get("mode") == "chat"
                  and not _UNSTABLE.search(k)]
        for group in (curated, mapped):
            pool = []
            for model, label in group:
                live, when = self._live(model, today)
                found = self.prices(model)
                if live and found is not None:
                    pool.append(Replacement(model, label, found[0], found[1], when))
            if pool:
                return pool
        return []

    def replacement(self, model: str, today: date | None = None) -> Replacement | None:
        """A live model of the same provider with the closest blended price (None when there is none).
        Variants of the retiring model itself (its dated or preview snapshots) are not suggested."""
        today = _today(today)
        own = self.prices(model)
        stem = (self.cost_map.key_for(model) or model).split(":")[-1] if model.startswith("ft:") else model
        pool = [r for r in self._pool(self.cost_map.provider(model), today)
                if r.model != model and not r.model.startswith(stem)]
        if not pool:
            return None
        target = blended(*own) if own else None

        def distance(r: Replacement) -> tuple:
            soon = r.retires is not None and (r.retires - today).days <= STABLE_DAYS
            price = blended(r.in_per_1m, r.out_per_1m)
            gap = abs(math.log((price + 1e-9) / (target + 1e-9))) if target is not None else price
            return soon, gap, len(r.model)

        return min(pool, key=distance)

    def warning(self, name: str, access_point: str, today: date | None = None,
                days: int = SOON_DAYS) -> RetirementWarning | None:
        """A warning when the access point retires within `days` or has retired, else None."""
        if access_point.startswith(("local/", "http://", "https://")):
            return None
        today = _today(today)
        when = self.retires(access_point)
        if when is None or (when - today).days > days:
            return None
        return RetirementWarning(name, access_point, when, (when - today).days, self.prices(access_point),
                       self.replacement(access_point, today))

    def warnings(self, entries: Iterable[Any], today: date | None = None,
                 days: int = SOON_DAYS) -> list[RetirementWarning]:
        """Warnings for registry entries (Entry objects or dicts); entries marked status 'retired' are skipped."""
        out = []
        for e in entries:
            get = e.get if isinstance(e, dict) else (lambda k, _e=e: getattr(_e, k, None))
            if get("status") == "retired" or not get("access_point"):
                continue
            found = self.warning(str(get("name")), str(get("access_point")), today, days)
            if found:
                out.append(found)
        return out


def registry_warnings(entries: Iterable[Any], today: date | None = None) -> list[str]:
    """One line per registry entry retiring within SOON_DAYS or retired; a broken price file is one line too."""
    try:
        return [w.message() for w in Lifecycle.load().warnings(entries, today)]
    except Exception as exc:  # noqa: BLE001 a warning helper must never break validate or a page
        return [f"retirement dates unavailable: {type(exc).__name__}: {exc}"]


def show(entries: Iterable[Any], today: date | None = None) -> list[str]:
    """Streamlit: one warning box per registry entry that retires within SOON_DAYS or has retired."""
    import streamlit as st

    lines = registry_warnings(list(entries), today)
    for line in lines:
        st.warning(line, icon="⏳")
    return lines
