"""The cost arithmetic and the price rows joined with the cost map and a dataset's token profile.

Cost per session (mean over the dataset's sessions; every agent message is one model call):
    cost = Σ_agent turns (input_tokens × in_price + output_tokens × out_price)
    input_tokens of a turn = prompt (system + template + few-shot) + all earlier messages
                             + MESSAGE_OVERHEAD per message + REPLY_PRIMING
so with A agent turns, H = Σ history tokens and O = Σ output tokens of a session:
    cost = (A × prompt + H) × in_price + O × out_price.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable

from core.prices.costmap import COST_MAP_URL, CostMap, load_cost_map
from core.prices.rows import PRICES_DIR, CandidateRow, FinetuneRow, load_candidates, load_finetune
from core.prices.tokens import TokenProfile, available, dataset_profile, tokenizer_for
from core.retirement import SOON_DAYS

DEFAULT_FEWSHOT = 2  # example sessions a prompt-engineered agent carries in its prompt
DEFAULT_EPOCHS = 3  # OpenAI's "auto" picks 3 for datasets of a few hundred examples; Together/Fireworks default too
STALE_DAYS = 90  # a curated price older than this is re-checked by hand (fine-tuning prices are not in the map)
# Token profiles of the README datasets, measured where the data is (`python -m core.pricing daily`), so a
# scheduled job without the client data (CI) regenerates the same tables. Aggregate counts only, no text.
PROFILES_FILE = PRICES_DIR / "profiles.json"


def stored_profiles(path: Path = PROFILES_FILE) -> dict[tuple[str, str], TokenProfile]:
    """(dataset, tokenizer) -> profile saved by `daily`; empty when the file is missing or damaged."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return {(r["dataset"], r["tokenizer"]): TokenProfile(**r) for r in rows}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


def save_profiles(profiles: Iterable[TokenProfile], path: Path = PROFILES_FILE) -> bool:
    """Write the profiles (sorted, stable text); True when the file changed."""
    rows = sorted((asdict(p) for p in profiles), key=lambda r: (r["dataset"], r["tokenizer"]))
    text = json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


@dataclass(frozen=True)
class SessionCost:
    """Mean cost of one session and the arithmetic behind it."""

    usd: float
    agent_turns: float
    prompt_tokens: float
    history_tokens: float
    output_tokens: float
    in_per_1m: float
    out_per_1m: float

    @property
    def input_tokens(self) -> float:
        return self.agent_turns * self.prompt_tokens + self.history_tokens

    def explain(self) -> str:
        return (f"({self.agent_turns:.2f} turns × {self.prompt_tokens:,.0f} prompt + {self.history_tokens:,.0f} history)"
                f" = {self.input_tokens:,.0f} in × ${fmt_price(self.in_per_1m)}/1M + {self.output_tokens:,.0f} out"
                f" × ${fmt_price(self.out_per_1m)}/1M = {fmt_usd(self.usd)}")


def session_cost(profile: TokenProfile, in_per_1m: float, out_per_1m: float, *, fewshot: int = 0,
                 template_tokens: int = 0) -> SessionCost:
    """Σ over agent turns of (prompt + history) × input price + output × output price, per session."""
    prompt = profile.prompt_tokens(fewshot, template_tokens)
    inputs = profile.agent_turns * prompt + profile.history_tokens
    usd = (inputs * in_per_1m + profile.output_tokens * out_per_1m) / 1e6
    return SessionCost(usd, profile.agent_turns, prompt, profile.history_tokens, profile.output_tokens,
                       in_per_1m, out_per_1m)


def training_cost(profile: TokenProfile, train_per_1m: float, epochs: int = DEFAULT_EPOCHS,
                  good_only: bool = False) -> float:
    """One-off training cost: training tokens × epochs × price."""
    return profile.training_tokens(good_only) * epochs * train_per_1m / 1e6


def fmt_usd(x: float | None) -> str:
    """Three significant digits without scientific notation ($0.000123, $1.23, $1,234.00)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "$0"
    if x >= 1:
        return f"${x:,.2f}"
    return f"${x:.{max(2, 2 - math.floor(math.log10(x)))}f}"


def fmt_price(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2f}" if abs(p - round(p, 2)) < 1e-9 else f"{p:.4f}".rstrip("0")


def status(retires: date | None, today: date | None = None) -> str:
    today = today or datetime.now(timezone.utc).date()
    if retires is None:
        return "active"
    return f"retired {retires}" if retires <= today else f"retires {retires}"



def finetune_status(retires: date | None, jobs_end: date | None, today: date | None = None) -> str:
    """status() plus when new fine-tuning jobs stop, if the provider announced it."""
    today = today or datetime.now(timezone.utc).date()
    jobs = "" if jobs_end is None else f"new jobs {'ended' if jobs_end <= today else 'end'} {jobs_end}"
    if retires is None:
        return jobs or "active"
    return status(retires, today) + (f", {jobs}" if jobs and retires > today else "")


def retiring_soon(retires: date | None, today: date | None = None, days: int = SOON_DAYS) -> bool:
    """Retired already, or retiring within `days`."""
    today = today or datetime.now(timezone.utc).date()
    return retires is not None and (retires - today).days <= days


@dataclass
class Prices:
    """Everything the tables need, loaded once: candidates, fine-tuning rows and the cost map."""

    candidates: list[CandidateRow]
    finetune: list[FinetuneRow]
    cost_map: CostMap
    map_date: date | None  # source date of map prices: fetch date, else the date the curated list was checked
    checked_with: str | None = None
    profiles: dict = field(default_factory=dict)

    @classmethod
    def load(cls) -> "Prices":
        head, candidates = load_candidates()
        _, finetune = load_finetune()
        cost_map = load_cost_map()
        return cls(candidates, finetune, cost_map, cost_map.fetched or head.updated, head.checked_with)

    def profile(self, key: str, tokenizer: str) -> TokenProfile:
        """Measured on the dataset; where its file is missing, the profile `daily` saved (FileNotFoundError if none)."""
        if (key, tokenizer) not in self.profiles:
            try:
                self.profiles[(key, tokenizer)] = dataset_profile(key, tokenizer)
            except (FileNotFoundError, KeyError):  # no data file here (CI), or no such customer
                name = tokenizer if available(tokenizer) else "approx"
                saved = stored_profiles().get((key, name))
                if saved is None:
                    raise
                self.profiles[(key, tokenizer)] = saved
        return self.profiles[(key, tokenizer)]

    def has_profile(self, key: str) -> bool:
        """Whether per-session costs on `key` can be computed (its file is here, or a saved profile is)."""
        try:
            self.profile(key, "approx")
            return True
        except Exception:  # noqa: BLE001 an unknown customer, a broken file: the column says n/a
            return False

    def candidate_prices(self, row: CandidateRow) -> tuple[float | None, float | None, str, date | None]:
        """(in, out, evidence source, source date): the row's own prices, else the map's."""
        if row.input_per_1m is not None and row.output_per_1m is not None:
            return row.input_per_1m, row.output_per_1m, row.source or "local price file", row.source_date
        found = self.cost_map.prices(row.litellm_model)
        if found is None:
            return None, None, "not in the LiteLLM map", None
        return found[0], found[1], COST_MAP_URL, self.map_date

    def inference_rows(self, key: str | None, fewshot: int = DEFAULT_FEWSHOT, today: date | None = None) -> list[dict]:
        """One dict per candidate: prices, status, and the mean per-session cost on dataset `key`."""
        out = []
        for row in self.candidates:
            p_in, p_out, source, source_date = self.candidate_prices(row)
            retires = row.retires or self.cost_map.deprecation(row.litellm_model)
            tok = tokenizer_for(row.litellm_model)
            cost = None
            if key and p_in is not None:
                cost = session_cost(self.profile(key, tok), p_in, p_out, fewshot=fewshot)
            out.append({"provider": row.provider, "model": row.model, "litellm_model": row.litellm_model,
                        "finetunable": row.finetunable, "in_per_1m": p_in, "out_per_1m": p_out,
                        "retires": retires, "status": status(retires, today),
                        "tokenizer": tok, "cost": cost, "source": source, "source_date": source_date,
                        "note": row.note})
        return out

    def finetune_rows(self, key: str | None, epochs: int = DEFAULT_EPOCHS, good_only: bool = False,
                      today: date | None = None) -> list[dict]:
        """One dict per fine-tuning row: one-off training cost and tuned per-session cost on `key`."""
        out = []
        for row in self.finetune:
            tok = tokenizer_for(row.litellm_model or row.model)
            prof = self.profile(key, tok) if key else None
            train = training_cost(prof, row.train_per_1m, epochs, good_only) if prof and row.train_per_1m is not None else None
            cost = None
            if prof and row.infer_input_per_1m is not None and row.infer_output_per_1m is not None:
                cost = session_cost(prof, row.infer_input_per_1m, row.infer_output_per_1m)  # learned: no few-shot
            serving = _serving(row)
            out.append({"provider": row.provider, "model": row.model, "method": row.method,
                        "train_per_1m": row.train_per_1m, "in_per_1m": row.infer_input_per_1m,
                        "out_per_1m": row.infer_output_per_1m, "tokenizer": tok,
                        "training_tokens": prof.training_tokens(good_only) if prof else None, "epochs": epochs,
                        "training_cost": train, "cost": cost, "serving": serving,
                        "dedicated_usd_per_hour": row.dedicated_usd_per_hour,
                        "retires": row.retires, "jobs_end": row.jobs_end,
                        # a fine-tune is worth planning only while a new job can still be started
                        "usable_until": min((d for d in (row.retires, row.jobs_end) if d), default=None),
                        "status": finetune_status(row.retires, row.jobs_end, today), "source": row.source,
                        "source_date": row.source_date, "note": row.note})
        return out


def _serving(row: FinetuneRow) -> str:
    """How the tuned model is billed: per token, per GPU-hour on a dedicated endpoint, or unknown."""
    if row.infer_input_per_1m is not None:
        return "per token"
    if row.dedicated_usd_per_hour:
        return f"dedicated {row.dedicated_gpu or 'GPU'} ${row.dedicated_usd_per_hour:.2f}/h"
    return "dedicated endpoint (price not public)" if "edicated" in row.note else "not public"

