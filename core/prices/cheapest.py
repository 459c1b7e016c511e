"""The cheapest live options on a client's dataset: prompt-engineered agents and fine-tunes.

    python -m core.pricing cheapest

Retired models and models retiring within core.retirement.SOON_DAYS are left out, and the result
names them, so a winner is never a model that stops answering next month.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from core.prices.costs import DEFAULT_EPOCHS, DEFAULT_FEWSHOT, Prices, fmt_price, fmt_usd, retiring_soon
from core.retirement import SOON_DAYS


@dataclass
class Ranked:
    """Rows (the dicts of Prices.inference_rows / finetune_rows), cheapest first."""

    prompt: list[dict]
    per_token: list[dict]  # fine-tunes billed per token
    dedicated: list[dict]  # fine-tunes served on a dedicated endpoint: only the training cost compares
    ignored: list[str]  # "model (retired 2026-10-23)" for every row left out for retiring

    def ignored_note(self) -> str:
        if not self.ignored:
            return ""
        return f"Left out (retired or retiring within {SOON_DAYS} days): {', '.join(self.ignored)}."


def ranked(prices: Prices, key: str, fewshot: int = DEFAULT_FEWSHOT, epochs: int = DEFAULT_EPOCHS,
           today: date | None = None) -> Ranked:
    """Live rows with a cost on `key`, cheapest first; retired and soon-retired rows only named."""
    inference = prices.inference_rows(key, fewshot, today=today)
    tuning = prices.finetune_rows(key, epochs, today=today)
    ignored = [f"{r['model']} ({r['status']})" for r in inference if retiring_soon(r["retires"], today)]
    ignored += [f"{r['provider']} {r['model']} fine-tuning ({r['status']})" for r in tuning
                if retiring_soon(r["usable_until"], today)]
    prompt = sorted((r for r in inference if r["cost"] and not retiring_soon(r["retires"], today)),
                    key=lambda r: r["cost"].usd)
    live_ft = [r for r in tuning if not retiring_soon(r["usable_until"], today)]
    per_token = sorted((r for r in live_ft if r["cost"]), key=lambda r: (r["cost"].usd, r["training_cost"] or 0))
    dedicated = sorted((r for r in live_ft if not r["cost"] and r["training_cost"] is not None),
                       key=lambda r: r["training_cost"])
    return Ranked(prompt, per_token, dedicated, ignored)


def _when(row: dict) -> str:
    return "" if row["status"] == "active" else f" [{row['status']}]"


def cheapest(prices: Prices, key: str, n: int = 3, fewshot: int = DEFAULT_FEWSHOT,
             epochs: int = DEFAULT_EPOCHS, today: date | None = None) -> dict[str, list[str]]:
    """The n cheapest live prompt-engineered and fine-tuned options on a dataset, each with its arithmetic,
    and under "ignored" the retired or soon-retired rows that were left out."""
    r = ranked(prices, key, fewshot, epochs, today)
    prompt = [f"{x['model']} ({x['litellm_model']}, {x['tokenizer']} tokens){_when(x)}: {x['cost'].explain()}"
              for x in r.prompt[:n]]
    tuned = []
    for x in r.per_token[:n]:
        tuned.append(f"{x['provider']} {x['model']} ({x['method']}){_when(x)}: training {x['training_tokens']:,.0f} "
                     f"tokens × {epochs} epochs × ${fmt_price(x['train_per_1m'])}/1M = {fmt_usd(x['training_cost'])} "
                     f"once; per session {x['cost'].explain()}")
    best = r.per_token[0]["cost"].usd if r.per_token else None
    for x in r.dedicated[: n - len(tuned)]:
        line = (f"{x['provider']} {x['model']} ({x['method']}){_when(x)}: training "
                f"{x['training_tokens']:,.0f} tokens × {epochs} epochs × ${fmt_price(x['train_per_1m'])}/1M = "
                f"{fmt_usd(x['training_cost'])} once; serving: {x['serving']}")
        if x["dedicated_usd_per_hour"] and best:
            line += (f" → beats the cheapest per-token fine-tune only above "
                     f"${x['dedicated_usd_per_hour']:.2f}/h ÷ {fmt_usd(best)} = "
                     f"{x['dedicated_usd_per_hour'] / best:,.0f} sessions/hour")
        tuned.append(line)
    return {"prompt": prompt, "finetune": tuned, "ignored": r.ignored}
