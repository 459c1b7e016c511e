"""The daily price job: refresh the cost map, regenerate the README tables, log what changed.

    python -m core.pricing daily                    # offline: falls back to the map we have and says so
    python -m core.pricing daily --require-fetch    # CI: exit 3 (and touch nothing) when the fetch fails

What changed is found by comparing the candidates and fine-tuning rows with core/prices/state.json,
the snapshot of the last run that changed something: prices, candidates added or removed (from the
lists or from the map), deprecation dates that appeared, moved or passed, models entering the
30-day retirement window, and fine-tuning rows whose source_date crossed the stale limit. Changes
go, newest first, into core/prices/CHANGES.md under the date. With nothing changed, nothing is
written, so a second run the same day is a no-op. Exit 0 whatever changed; 2 when something failed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable

from core.prices.costmap import refresh_cost_map
from core.prices.costs import PROFILES_FILE, STALE_DAYS, Prices, fmt_price, save_profiles, stored_profiles
from core.prices.readme import README_DATASETS, find_markers, readme_section, update_readme
from core.prices.rows import PRICES_DIR
from core.prices.tokens import dataset_profile, tokenizer_for
from core.retirement import SOON_DAYS

STATE_FILE = PRICES_DIR / "state.json"
CHANGES_FILE = PRICES_DIR / "CHANGES.md"
CHANGES_HEADER = ("# Price and model changes\n\nWritten by `python -m core.pricing daily`, newest first: prices, "
                  "candidates added or removed, deprecation dates, retirements and stale fine-tuning prices.\n")


@dataclass
class DailyReport:
    refresh: str  # the refresh line, naming the fallback when the fetch failed
    fetched: bool
    since: str | None  # as_of of the previous snapshot; None on the first run
    changes: list[str] = field(default_factory=list)
    readme_changed: bool = False
    stale: list[str] = field(default_factory=list)  # every fine-tuning row over the limit today
    soon: list[str] = field(default_factory=list)  # candidates retiring within SOON_DAYS (not yet retired)
    aborted: bool = False  # require_fetch and the fetch failed: nothing was written


    def lines(self) -> list[str]:
        if self.aborted:
            return [f"cost map: {self.refresh}", "fetch required (--require-fetch): nothing written"]
        out = [f"cost map: {self.refresh}",
               f"README: price tables {'rewritten' if self.readme_changed else 'unchanged (already current)'}"]
        if self.changes:
            out.append(f"changes since {self.since}: {len(self.changes)}" if self.since
                       else f"first run, baseline: {len(self.changes)} lines")
            out[-1] += f", logged at the top of {CHANGES_FILE.relative_to(CHANGES_FILE.parents[2])}"
            out += [f"  {c}" for c in self.changes]
        else:
            out.append(f"no changes since the last logged run ({self.since}); change log not touched")
        out.append(f"retiring within {SOON_DAYS} days: {', '.join(self.soon) or 'none'}")
        out.append(f"fine-tuning prices older than {STALE_DAYS} days: {len(self.stale)}"
                   + "".join(f"\n  {s}" for s in self.stale))
        return out


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def snapshot(prices: Prices, today: date) -> dict:
    """What the change log compares: every candidate's prices and date, every fine-tuning row's."""
    cands = {r["litellm_model"]: {"model": r["model"], "in": r["in_per_1m"], "out": r["out_per_1m"],
                                  "retires": _iso(r["retires"])} for r in prices.inference_rows(None, today=today)}
    tuning = {f"{r.provider} {r.model} ({r.method})": {"train": r.train_per_1m, "in": r.infer_input_per_1m,
                                                        "out": r.infer_output_per_1m, "retires": _iso(r.retires),
                                                        "jobs_end": _iso(r.jobs_end),
                                                        "source_date": _iso(r.source_date)} for r in prices.finetune}
    return {"as_of": today.isoformat(), "candidates": cands, "finetune": tuning}


def _pair(a, b) -> str:
    return f"{fmt_price(a)} / {fmt_price(b)}"


def _days(a: str | None, b: date) -> int | None:
    return (b - date.fromisoformat(a)).days if a else None


# snapshot key -> (what the date is called, what passing it means, what approaching it means)
DATES = {"retires": ("deprecation date", "retired", "retires"),
         "jobs_end": ("fine-tuning cutoff", "new fine-tuning jobs ended", "new fine-tuning jobs end")}


def _date_changes(label: str, old: dict | None, new: dict, since: date | None, today: date,
                  key: str = "retires") -> list[str]:
    """Dates that appeared, moved, were withdrawn, passed, or entered the warning window."""
    name, passed, coming = DATES[key]
    out, was, now = [], (old or {}).get(key), new.get(key)
    if old is not None and was != now:
        out.append(f"{name} appeared: {label} {coming} {now}" if was is None and now
                   else f"{name} withdrawn: {label} (was {was})" if now is None
                   else f"{name} moved: {label} {was} → {now}")
    if now:
        when = date.fromisoformat(now)
        if when <= today and (since is None or when > since):
            out.append(f"{passed} {'since the last run' if since else 'already'}: {label} on {now}")
        if 0 < (when - today).days <= SOON_DAYS and (since is None or (when - since).days > SOON_DAYS):
            out.append(f"{coming} within {SOON_DAYS} days: {label} on {now}")
    return out


def _candidate_changes(old: dict, new: dict, since: date | None, today: date) -> list[str]:
    out = []
    for key, n in new.items():
        label, o = f"{n['model']} (`{key}`)", old.get(key)
        if since is not None and o is None:
            out.append(f"new candidate: {label} at {_pair(n['in'], n['out'])} per 1M in/out")
        elif o is not None and (o["in"], o["out"]) != (n["in"], n["out"]):
            out.append(f"no longer in the cost map: {label}" if n["in"] is None
                       else f"now in the cost map: {label} at {_pair(n['in'], n['out'])}" if o["in"] is None
                       else f"price: {label} {_pair(o['in'], o['out'])} → {_pair(n['in'], n['out'])} per 1M in/out")
        out += _date_changes(label, o, n, since, today)
    out += [f"removed candidate: {o['model']} (`{key}`)" for key, o in old.items() if key not in new]
    return out


def _finetune_changes(old: dict, new: dict, since: date | None, today: date, stale_days: int) -> list[str]:
    out = []
    for key, n in new.items():
        o = old.get(key)
        if since is not None and o is None:
            out.append(f"new fine-tuning row: {key}, training {fmt_price(n['train'])} per 1M")
        elif o is not None and (o["train"], o["in"], o["out"]) != (n["train"], n["in"], n["out"]):
            out.append(f"fine-tuning price: {key} training {fmt_price(o['train'])} → {fmt_price(n['train'])}, "
                       f"tuned {_pair(o['in'], o['out'])} → {_pair(n['in'], n['out'])} per 1M")
        if o is not None and o["source_date"] != n["source_date"]:
            out.append(f"fine-tuning source re-checked: {key} {o['source_date']} → {n['source_date']}")
        out += _date_changes(f"{key} fine-tuning", o, n, since, today)
        out += _date_changes(key, o, n, since, today, "jobs_end")
        age, age_then = _days(n["source_date"], today), _days(n["source_date"], since) if since else None
        if age is not None and age > stale_days and (age_then is None or age_then <= stale_days
                                                     or (o or {}).get("source_date") != n["source_date"]):
            out.append(f"stale: {key} price source dated {n['source_date']} is {age} days old (limit {stale_days})")
    out += [f"removed fine-tuning row: {key}" for key in old if key not in new]
    return out


def diff(old: dict | None, new: dict, today: date, stale_days: int = STALE_DAYS) -> list[str]:
    """One line per change between two snapshots; on the first run (old None), the state worth knowing."""
    since = date.fromisoformat(old["as_of"]) if old else None
    out = [] if old else [f"first run: baseline of {len(new['candidates'])} candidates and "
                          f"{len(new['finetune'])} fine-tuning rows recorded"]
    out += _candidate_changes((old or {}).get("candidates", {}), new["candidates"], since, today)
    out += _finetune_changes((old or {}).get("finetune", {}), new["finetune"], since, today, stale_days)
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def append_changes(path: Path, today: date, source: str, changes: list[str]) -> None:
    """Insert a dated entry at the top of the change log (created with its header when missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else CHANGES_HEADER
    head, sep, rest = text.partition("\n## ")
    entry = f"## {today.isoformat()} ({source})\n\n" + "".join(f"- {c}\n" for c in changes)
    _write(path, head.rstrip("\n") + "\n\n" + entry + (f"\n## {rest}" if sep else ""))


def read_state(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to record a new baseline") from None


def save_readme_profiles(prices: Prices, path: Path, datasets=README_DATASETS) -> bool:
    """Store the token profiles of the README datasets present here, so CI regenerates the same tables."""
    tokenizers = {tokenizer_for(r.litellm_model) for r in prices.candidates}
    tokenizers |= {tokenizer_for(r.litellm_model or r.model) for r in prices.finetune} | {"approx"}
    measured = []
    for key in datasets:
        try:
            measured += [dataset_profile(key, t) for t in sorted(tokenizers)]
        except (FileNotFoundError, KeyError):
            continue  # not here (CI): keep what was stored
    if not measured:
        return False
    kept = {k: p for k, p in stored_profiles(path).items() if k[0] not in {p.dataset for p in measured}}
    return save_profiles([*kept.values(), *measured], path)


def run_daily(readme: Path, changes: Path = CHANGES_FILE, state: Path = STATE_FILE,
              profiles: Path = PROFILES_FILE, url: str | None = None, require_fetch: bool = False,
              today: date | None = None, stale_days: int = STALE_DAYS,
              fetch: Callable[[str, float], bytes] | None = None) -> DailyReport:
    """Refresh, regenerate, log; with require_fetch and a failed fetch, write nothing (report.aborted)."""
    today = today or datetime.now(timezone.utc).date()
    find_markers(readme)  # fail before the network and the datasets
    old = read_state(state)
    refresh = refresh_cost_map(url, fetch=fetch)
    if require_fetch and not refresh.fetched:
        return DailyReport(refresh.message, False, old["as_of"] if old else None, aborted=True)
    prices = Prices.load()
    save_readme_profiles(prices, profiles)
    new = snapshot(prices, today)
    report = DailyReport(refresh.message, refresh.fetched, old["as_of"] if old else None)
    report.changes = diff(old, new, today, stale_days)
    if report.changes:  # nothing changed: the log and the snapshot stay as they are (a second run is a no-op)
        append_changes(changes, today, prices.cost_map.source, report.changes)
        _write(state, json.dumps(new, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    report.readme_changed = update_readme(readme, readme_section(prices, today=today))
    report.soon = [f"{r['model']} ({r['retires']})" for r in prices.inference_rows(None, today=today)
                   if r["retires"] and 0 < (r["retires"] - today).days <= SOON_DAYS]
    report.stale = [f"{r.provider} {r.model} ({r.method}): {r.source_date}, {(today - r.source_date).days} days"
                    for r in prices.finetune if (today - r.source_date).days > stale_days]
    return report
