"""The price section of README.md: two Markdown tables generated from the price files and the data.

    python -m core.pricing readme [--readme README.md]

Only the text between <!-- pricing:start --> and <!-- pricing:end --> is replaced, and only when the
tables changed: the "Tables updated" stamp keeps its old time otherwise, so a second run is a no-op.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Sequence

from core.pricing import (COST_MAP_URL, DEFAULT_EPOCHS, DEFAULT_FEWSHOT, RESEARCH_FILE, Prices, fmt_price,
                          fmt_usd)
from core.prices.tokens import open_dataset

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
    if url == COST_MAP_URL:
        return f"[LiteLLM map]({url})"
    host = re.sub(r"^https?://(www\.)?", "", url).split("/")[0]
    return f"[{host}]({url})"


def readme_section(prices: Prices, datasets: Sequence[str] = README_DATASETS, today: date | None = None) -> str:
    """The Markdown between the markers, without the 'Tables updated' line."""
    keys = [k for k in datasets if _has_dataset(k)]
    missing = [k for k in datasets if k not in keys]
    cols = [f"$/session `{k}`" for k in datasets]
    ranking = _ranking_sources()
    refs = "".join(f"[^rank{i}]" for i in range(1, len(ranking) + 1))
    lines = ["### Inference: prompt-engineered agent", "",
             f"Per session: the client's system prompt + {DEFAULT_FEWSHOT} few-shot example sessions, every agent turn "
             "re-sends the whole history; means over each dataset's sessions. Candidates picked for price vs "
             f"quality using public rankings{refs}.", "",
             "| Evidence source | Model | $/1M input | $/1M output | " + " | ".join(cols) + " | Source date |",
             "|---|---|--:|--:|" + "--:|" * len(cols) + "---|"]
    per_key = {k: {r["litellm_model"]: r for r in prices.inference_rows(k, today=today)} for k in keys}
    for r in prices.inference_rows(None, today=today):
        name = f"{r['model']} (`{r['litellm_model']}`)" + ("" if r["status"] == "active" else f", {r['status']}")
        costs = [fmt_usd(per_key[k][r["litellm_model"]]["cost"].usd) if k in per_key and per_key[k][r["litellm_model"]]["cost"]
                 else "n/a" for k in datasets]
        lines.append(f"| {_link(r['source'])} | {name} | {fmt_price(r['in_per_1m'])} | {fmt_price(r['out_per_1m'])} | "
                     + " | ".join(costs) + f" | {r['source_date'] or 'n/a'} |")
    lines += ["", "### Fine-tuning", "",
              f"Training cost = dataset tokens (each session + system prompt) × {DEFAULT_EPOCHS} epochs × training price, "
              "once. Tuned-model sessions carry the system prompt but no few-shot examples. n/a = no public price "
              "(see core/prices/finetune.yaml notes).", "",
              "| Evidence source | Model | Method | Training $/1M | Tuned $/1M in / out | "
              + " | ".join(f"Training `{k}`" for k in datasets) + " | " + " | ".join(cols) + " | Source date |",
              "|---|---|---|--:|--:|" + "--:|" * (2 * len(cols)) + "---|"]
    per_key_ft = {k: prices.finetune_rows(k, today=today) for k in keys}
    for i, r in enumerate(prices.finetune_rows(None, today=today)):
        name = f"{r['provider']} {r['model']}" + ("" if r["status"] == "active" else f", {r['status']}")
        tuned = (f"{fmt_price(r['in_per_1m'])} / {fmt_price(r['out_per_1m'])}" if r["in_per_1m"] is not None
                 else r["serving"])
        train = [fmt_usd(per_key_ft[k][i]["training_cost"]) if k in per_key_ft else "n/a" for k in datasets]
        sess = [fmt_usd(per_key_ft[k][i]["cost"].usd) if k in per_key_ft and per_key_ft[k][i]["cost"] else "n/a"
                for k in datasets]
        lines.append(f"| {_link(r['source'])} | {name} | {r['method']} | {fmt_price(r['train_per_1m'])} | {tuned} | "
                     + " | ".join(train + sess) + f" | {r['source_date']} |")
    lines += ["", f"Inference prices: {prices.cost_map.source}"
              + (f", checked against {prices.checked_with}" if prices.checked_with and not prices.cost_map.fetched else "")
              + ". Tokens: OpenAI o200k and DeepSeek tokenizers where the model has one here, else 1 token per CJK "
              "character + 1 per 4 other characters. Regenerate with `python -m core.pricing readme`."]
    if missing:
        lines.append(f"Not available when generated (n/a columns): {', '.join(missing)}.")
    lines.append("")
    for i, (text, url) in enumerate(ranking, start=1):
        lines.append(f"[^rank{i}]: {text}: <{url}>")
    return "\n".join(lines)


def _has_dataset(key: str) -> bool:
    try:
        open_dataset(key)
        return True
    except Exception:  # noqa: BLE001 missing file or customer: the column says n/a
        return False


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
    path.write_text(text[:start + len(MARK_START)] + section + text[end:], encoding="utf-8")
    return True


