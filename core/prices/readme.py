"""The price section of README.md: tables generated from the price files, the cost map and the data.

    python -m core.pricing readme [--readme README.md]
    python -m core.pricing daily                         # refresh + this + the change log

Only the text between <!-- pricing:start --> and <!-- pricing:end --> is replaced, and only when the
tables changed: the "Tables updated" stamp keeps its old time otherwise, so a second run is a no-op.
Retired models leave the main tables for a short "retired" list with a suggested replacement; the
"cheapest" lines skip retired and soon-retired models and say which.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Sequence

from core.prices.cheapest import ranked
from core.prices.costmap import COST_MAP_URL, DEFAULT_URL
from core.prices.costs import DEFAULT_EPOCHS, DEFAULT_FEWSHOT, Prices, fmt_price, fmt_usd, retiring_soon
from core.prices.rows import RESEARCH_FILE
from core.retirement import SOON_DAYS, Lifecycle, blended

README_DATASETS = ("shop_zh/demo", "twitter_care/dev")
MARK_START, MARK_END = "<!-- pricing:start -->", "<!-- pricing:end -->"


def _ranking_sources() -> list[tuple[str, str]]:
    """(text, url) of the price-vs-quality ranking sources listed in RESEARCH.md."""
    text = RESEARCH_FILE.read_text(encoding="utf-8") if RESEARCH_FILE.exists() else ""
    section = text.split("## Price-vs-quality ranking sources", 1)[-1] if "ranking sources" in text else ""
    found = []
    for line in section.splitlines():
        m = re.match(r"^\d+\.\s+(.*?)\s*(https?://\S+?)[.)]?\s*$", line.strip())
        if m:
            found.append((m.group(1).rstrip(" .:"), m.group(2)))
    return found


def _link(url: str | None) -> str:
    if not url or not url.startswith("http"):
        return url or ""
    if url in (COST_MAP_URL, DEFAULT_URL):
        return f"[LiteLLM map]({url})"
    host = re.sub(r"^https?://(www\.)?", "", url).split("/")[0]
    return f"[{host}]({url})"


def _mark(row: dict, today: date | None) -> str:
    if row["status"] == "active":
        return ""
    soon = f" (≤ {SOON_DAYS} days: not a cheapest pick)" if retiring_soon(row.get("usable_until", row["retires"]),
                                                                          today) else ""
    return f", {row['status']}{soon}"


def _inference_table(prices: Prices, datasets: Sequence[str], keys: list[str], today: date | None) -> list[str]:
    cols = [f"$/session `{k}`" for k in datasets]
    lines = ["| Evidence source | Model | $/1M input | $/1M output | " + " | ".join(cols) + " | Source date |",
             "|---|---|--:|--:|" + "--:|" * len(cols) + "---|"]
    per_key = {k: {r["litellm_model"]: r for r in prices.inference_rows(k, today=today)} for k in keys}
    for r in prices.inference_rows(None, today=today):
        if r["status"].startswith("retired"):
            continue
        name = f"{r['model']} (`{r['litellm_model']}`){_mark(r, today)}"
        costs = [fmt_usd(per_key[k][r["litellm_model"]]["cost"].usd) if k in per_key
                 and per_key[k][r["litellm_model"]]["cost"] else "n/a" for k in datasets]
        lines.append(f"| {_link(r['source'])} | {name} | {fmt_price(r['in_per_1m'])} | {fmt_price(r['out_per_1m'])} | "
                     + " | ".join(costs) + f" | {r['source_date'] or 'n/a'} |")
    return lines


def _finetune_table(prices: Prices, datasets: Sequence[str], keys: list[str], today: date | None) -> list[str]:
    cols = [f"$/session `{k}`" for k in datasets]
    lines = ["| Evidence source | Model | Method | Training $/1M | Tuned $/1M in / out | "
             + " | ".join(f"Training `{k}`" for k in datasets) + " | " + " | ".join(cols) + " | Source date |",
             "|---|---|---|--:|--:|" + "--:|" * (2 * len(cols)) + "---|"]
    per_key = {k: prices.finetune_rows(k, today=today) for k in keys}
    for i, r in enumerate(prices.finetune_rows(None, today=today)):
        if r["status"].startswith("retired"):
            continue
        name = f"{r['provider']} {r['model']}{_mark(r, today)}"
        tuned = (f"{fmt_price(r['in_per_1m'])} / {fmt_price(r['out_per_1m'])}" if r["in_per_1m"] is not None
                 else r["serving"])
        train = [fmt_usd(per_key[k][i]["training_cost"]) if k in per_key else "n/a" for k in datasets]
        sess = [fmt_usd(per_key[k][i]["cost"].usd) if k in per_key and per_key[k][i]["cost"] else "n/a"
                for k in datasets]
        lines.append(f"| {_link(r['source'])} | {name} | {r['method']} | {fmt_price(r['train_per_1m'])} | {tuned} | "
                     + " | ".join(train + sess) + f" | {r['source_date']} |")
    return lines


def _retired_inference(prices: Prices, today: date | None) -> list[str]:
    life = Lifecycle(prices.cost_map, prices.candidates, prices.finetune)
    lines = []
    for r in prices.inference_rows(None, today=today):
        if r["status"].startswith("retired"):
            alt = life.replacement(r["litellm_model"], today)
            lines.append(f"- {r['model']} (`{r['litellm_model']}`): retired {r['retires']}; "
                         + (f"suggested: `{alt.model}` ({fmt_price(alt.in_per_1m)} / {fmt_price(alt.out_per_1m)})"
                            if alt else "no live model of the same provider in the lists"))
    return lines


def _finetune_replacement(rows: list[dict], retired: dict, today: date | None) -> dict | None:
    """A live fine-tuning row of the same provider with the closest tuned (else training) price."""
    live = [r for r in rows if r["provider"] == retired["provider"] and not retiring_soon(r["usable_until"], today)]

    def price(r: dict) -> float:
        return blended(r["in_per_1m"], r["out_per_1m"]) if r["in_per_1m"] is not None else (r["train_per_1m"] or 0)

    return min(live, key=lambda r: abs(price(r) - price(retired)), default=None)


def _retired_finetune(prices: Prices, today: date | None) -> list[str]:
    rows = prices.finetune_rows(None, today=today)
    lines = []
    for r in rows:
        if r["status"].startswith("retired"):
            alt = _finetune_replacement(rows, r, today)
            lines.append(f"- {r['provider']} {r['model']} ({r['method']}): retired {r['retires']}; "
                         + (f"suggested: {alt['provider']} {alt['model']} ({alt['method']})" if alt
                            else "no live fine-tuning row of the same provider"))
    return lines


def _cheapest_lines(prices: Prices, keys: list[str], today: date | None) -> list[str]:
    lines, note = [], ""
    for k in keys:
        r = ranked(prices, k, today=today)
        prompt = ", ".join(f"{x['model']} {fmt_usd(x['cost'].usd)}" for x in r.prompt[:3])
        tuned = ", ".join(f"{x['provider']} {x['model']} {fmt_usd(x['cost'].usd)}"
                          + (f" ({x['status']})" if x["status"] != "active" else "") for x in r.per_token[:3])
        lines.append(f"- `{k}`: prompt-engineered {prompt or 'n/a'}; fine-tuned (per token) {tuned or 'n/a'}.")
        note = r.ignored_note()
    return lines + ([f"- {note}"] if note else [])


def readme_section(prices: Prices, datasets: Sequence[str] = README_DATASETS, today: date | None = None) -> str:
    """The Markdown between the markers, without the 'Tables updated' line."""
    keys = [k for k in datasets if prices.has_profile(k)]
    missing = [k for k in datasets if k not in keys]
    ranking = _ranking_sources()
    refs = "".join(f"[^rank{i}]" for i in range(1, len(ranking) + 1))
    lines = ["### Inference: prompt-engineered agent", "",
             f"Per session: the client's system prompt + {DEFAULT_FEWSHOT} few-shot example sessions, every agent turn "
             "re-sends the whole history; means over each dataset's sessions. Candidates picked for price vs "
             f"quality using public rankings{refs}.", ""]
    lines += _inference_table(prices, datasets, keys, today)
    retired = _retired_inference(prices, today)
    if retired:
        lines += ["", "Retired (out of the table; calls to them fail):", *retired]
    lines += ["", "### Fine-tuning", "",
              f"Training cost = dataset tokens (each session + system prompt) × {DEFAULT_EPOCHS} epochs × training price, "
              "once. Tuned-model sessions carry the system prompt but no few-shot examples. n/a = no public price "
              "(see core/prices/finetune.yaml notes).", ""]
    lines += _finetune_table(prices, datasets, keys, today)
    retired = _retired_finetune(prices, today)
    if retired:
        lines += ["", "Retired (out of the table):", *retired]
    if keys:
        lines += ["", f"### Cheapest live options (up to 3 each; none retired or retiring within {SOON_DAYS} days)", "",
                  *_cheapest_lines(prices, keys, today)]
    lines += ["", f"Inference prices: {prices.cost_map.source}"
              + (f", checked against {prices.checked_with}" if prices.checked_with and not prices.cost_map.fetched else "")
              + ". Tokens: OpenAI o200k and DeepSeek tokenizers where the model has one here, else 1 token per CJK "
              "character + 1 per 4 other characters. Regenerate with `python -m core.pricing daily` (refresh, "
              "tables, change log in core/prices/CHANGES.md) or `python -m core.pricing readme` (tables only)."]
    if missing:
        lines.append(f"Not available when generated (n/a columns): {', '.join(missing)}.")
    lines.append("")
    for i, (text, url) in enumerate(ranking, start=1):
        lines.append(f"[^rank{i}]: {text}: <{url}>")
    return "\n".join(lines)


_STAMP = re.compile(r"^_Tables updated .* UTC\._$", re.M)


def find_markers(path: Path) -> tuple[str, int, int]:
    """(text, start, end) of the marked section; ValueError naming the markers when they are missing."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{path}: markers {MARK_START} and {MARK_END} not found (in that order); "
                         "add them where the price tables belong")
    return text, start, end


def update_readme(path: Path, body: str, now: datetime | None = None) -> bool:
    """Replace only the text between the markers; keep the old timestamp when the body is unchanged."""
    text, start, end = find_markers(path)
    old = text[start + len(MARK_START):end]
    if _STAMP.sub("", old).strip() == body.strip():
        return False
    now = now or datetime.now(timezone.utc)
    section = f"\n{body}\n\n_Tables updated {now:%Y-%m-%d %H:%M} UTC._\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text[:start + len(MARK_START)] + section + text[end:], encoding="utf-8")
    tmp.replace(path)
    return True
