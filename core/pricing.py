"""Price tables and the cost of one customer-service session, measured on a client's own data.

    python -m core.pricing refresh                        # fetch LiteLLM's newest cost map (offline: the shipped one)
    python -m core.pricing table --dataset shop_zh/demo   # per-session cost of every candidate and fine-tune
    python -m core.pricing cheapest                       # 3 cheapest prompt-engineered and fine-tuned options per client
    python -m core.pricing readme [--readme README.md]    # rewrite the marked price section of README.md
    python -m core.pricing check                          # validate the price YAML files

Layout: this module holds the price rows, the cost map, the cost arithmetic, the tables and the
CLI; core/prices/tokens.py measures a dataset's token profile; core/prices/readme.py writes the
README section.

Inference prices come from LiteLLM's cost map (read from the JSON file LiteLLM ships, which is
what `litellm.model_cost` holds offline, without the 8 s `import litellm`; a map fetched by
`refresh` is preferred). Fine-tuning prices are curated in core/prices/finetune.yaml (they are not
in LiteLLM's map); candidates in core/prices/candidates.yaml. Users extend both with
$CSFORGE_HOME/pricing/{candidates,finetune}.local.yaml or $CSFORGE_CANDIDATES / $CSFORGE_FINETUNE:
a local row replaces the curated row with the same key, other rows are added.

Cost per session (mean over the dataset's sessions; every agent message is one model call):
    cost = Σ_agent turns (input_tokens × in_price + output_tokens × out_price)
    input_tokens of a turn = prompt (system + template + few-shot) + all earlier messages
                             + MESSAGE_OVERHEAD per message + REPLY_PRIMING
so with A agent turns, H = Σ history tokens and O = Σ output tokens of a session:
    cost = (A × prompt + H) × in_price + O × out_price.
Tokens are counted with the target model's tokenizer where one is on disk (OpenAI's o200k and
DeepSeek's tokenizer ship inside LiteLLM; SmolLM2's under $CSFORGE_HOME/models/), else with
core.dataset.approx_tokens (1 token per CJK character, 1 per 4 other characters).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.paths import ROOT, home_dir, registry_path
# re-exported: `from core.pricing import dataset_profile, session_cost` is the public cost API
from core.prices.tokens import (MESSAGE_OVERHEAD, REPLY_PRIMING, TokenProfile, conversation_tokens,  # noqa: F401
                                counter, dataset_profile, litellm_dir, open_dataset, system_prompt, tokenizer_for)

if TYPE_CHECKING:  # heavy imports stay out of `import core.pricing`
    import pandas as pd


PRICES_DIR = Path(__file__).resolve().parent / "prices"
CANDIDATES_FILE = PRICES_DIR / "candidates.yaml"
FINETUNE_FILE = PRICES_DIR / "finetune.yaml"
RESEARCH_FILE = PRICES_DIR / "RESEARCH.md"
# LiteLLM's own default (litellm.model_cost_map_url); LiteLLM honours the same variable.
COST_MAP_URL = os.environ.get(
    "LITELLM_MODEL_COST_MAP_URL",
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json")
FETCH_TIMEOUT_S = 5  # a refresh must not hang a page or a cron job; the map is ~3 MB
DEFAULT_FEWSHOT = 2  # example sessions a prompt-engineered agent carries in its prompt
# What the Costs page says under its token statistics.
METHOD_NOTE = ("Every agent message is one model call. Its input is the prompt (system prompt + template + few-shot "
               "example sessions) plus every earlier message of the session with a few tokens of chat formatting "
               "each; its output is the agent message. Cost per session = Σ over agent turns (input tokens × input "
               "price + output tokens × output price), averaged over the dataset's sessions. Tokens are counted "
               "with the model's own tokenizer where one is on disk (o200k for OpenAI, DeepSeek's), else as "
               "1 token per Chinese/Japanese/Korean character + 1 per 4 other characters (approx).")
DEFAULT_EPOCHS = 3  # OpenAI's "auto" picks 3 for datasets of a few hundred examples; Together/Fireworks default too


# ------------------------------------------------------------------------------ price rows
class CandidateRow(BaseModel):
    """A model worth running as the agent; prices come from LiteLLM's map unless given here."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str  # display name
    litellm_model: str  # key in LiteLLM's cost map, also the access point
    finetunable: bool = False
    note: str = ""
    input_per_1m: float | None = Field(None, ge=0)  # only for models missing from the map
    output_per_1m: float | None = Field(None, ge=0)
    source: str | None = None  # evidence for manual prices
    source_date: date | None = None
    retires: date | None = None  # overrides the map's deprecation_date


class FinetuneRow(BaseModel):
    """One way to fine-tune: training price and the tuned model's price, with evidence."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str
    method: Literal["supervised", "lora", "full"]
    train_per_1m: float | None = Field(ge=0)  # null: no public price (the note says why)
    infer_input_per_1m: float | None = Field(ge=0)  # tuned model, per token; null when not public
    infer_output_per_1m: float | None = Field(ge=0)
    litellm_model: str | None = None
    source: str
    source_date: date
    note: str = ""
    retires: date | None = None  # base model and its fine-tunes shut down
    dedicated_gpu: str | None = None  # tuned model served only on a dedicated endpoint
    dedicated_usd_per_hour: float | None = Field(None, ge=0)


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updated: date | None = None
    checked_with: str | None = None


class PriceFileError(ValueError):
    """A price YAML that does not validate; the message names the file, the row and the field."""


def _read_rows(path: Path, row_type: type[BaseModel]) -> tuple[_PriceFile, list]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise PriceFileError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("rows", []), list):
        raise PriceFileError(f"{path}: expected a mapping with a list under 'rows'")
    errors, rows = [], []
    try:
        head = _PriceFile.model_validate({k: v for k, v in data.items() if k != "rows"})
    except ValidationError as exc:
        raise PriceFileError(f"{path}: {_describe(exc)}") from None
    for i, raw in enumerate(data.get("rows") or []):
        label = f"({raw.get('provider', '?')} {raw.get('model', '?')})" if isinstance(raw, dict) else ""
        try:
            rows.append(row_type.model_validate(raw))
        except ValidationError as exc:
            errors.append(f"{path}: rows[{i}] {label}: {_describe(exc)}")
    if errors:
        raise PriceFileError("\n".join(errors))
    return head, rows


def _describe(error: ValidationError) -> str:
    return "; ".join(f"field '{'.'.join(map(str, e['loc'])) or 'row'}': {e['msg']}" for e in error.errors())


def _local_file(env: str, name: str) -> Path | None:
    path = Path(os.environ[env]) if os.environ.get(env) else home_dir("pricing") / name
    return path if path.exists() else None


def _merged(curated: Path, env: str, local_name: str, row_type, key: Callable) -> tuple[_PriceFile, list]:
    head, rows = _read_rows(curated, row_type)
    local = _local_file(env, local_name)
    if local is not None:
        by_key = {key(r): i for i, r in enumerate(rows)}
        for row in _read_rows(local, row_type)[1]:
            if key(row) in by_key:
                rows[by_key[key(row)]] = row
            else:
                rows.append(row)
    return head, rows


def load_candidates() -> tuple[_PriceFile, list[CandidateRow]]:
    """Curated inference candidates merged with the user's local file (same litellm_model replaces)."""
    return _merged(CANDIDATES_FILE, "CSFORGE_CANDIDATES", "candidates.local.yaml", CandidateRow,
                   lambda r: r.litellm_model)


def load_finetune() -> tuple[_PriceFile, list[FinetuneRow]]:
    """Curated fine-tuning prices merged with the user's local file (same provider/model/method replaces)."""
    return _merged(FINETUNE_FILE, "CSFORGE_FINETUNE", "finetune.local.yaml", FinetuneRow,
                   lambda r: (r.provider, r.model, r.method))


# ------------------------------------------------------------------------------ LiteLLM cost map
@dataclass
class CostMap:
    """LiteLLM's model → price map and where it came from."""

    models: dict[str, dict]
    source: str  # one line for people: which map, from where, when
    fetched: date | None  # None: the copy shipped with the installed litellm

    def prices(self, model: str) -> tuple[float, float] | None:
        """(input, output) USD per 1M tokens, or None when the map lacks the model."""
        entry = self.models.get(model)
        if not entry or entry.get("input_cost_per_token") is None:
            return None
        # rounded: 1e-07 * 1e6 is 0.09999999999999999 in floats; prices have at most 6 decimals per 1M
        return (round(entry["input_cost_per_token"] * 1e6, 6),
                round((entry.get("output_cost_per_token") or 0.0) * 1e6, 6))

    def lookup(self, access_point: str) -> tuple[float, float] | None:
        """Prices of a registry access point: exact key, else the base of an OpenAI fine-tune
        ("ft:gpt-4o-mini-2024-07-18:org::id" → "ft:gpt-4o-mini-2024-07-18"); local models cost nothing per token."""
        if access_point.startswith("local/"):
            return 0.0, 0.0
        found = self.prices(access_point)
        if found is None and access_point.startswith("ft:"):
            found = self.prices(":".join(access_point.split(":")[:2]))
        return found

    def deprecation(self, model: str) -> date | None:
        raw = (self.models.get(model) or {}).get("deprecation_date")
        try:
            return date.fromisoformat(str(raw)) if raw else None
        except ValueError:
            return None


def _litellm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litellm")
    except PackageNotFoundError:
        return "?"


def _stored_map() -> tuple[Path, Path]:
    folder = home_dir("pricing")
    return folder / "model_cost_map.json", folder / "model_cost_map.meta.json"


@lru_cache(maxsize=1)
def _shipped_models() -> dict:
    folder = litellm_dir()
    backup = folder / "model_prices_and_context_window_backup.json" if folder else None
    if backup and backup.exists():
        return json.loads(backup.read_text(encoding="utf-8"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch on import
    import litellm  # the file moved: ask litellm itself (slow import, so only here)

    return dict(litellm.model_cost)


def load_cost_map() -> CostMap:
    """The map fetched by `refresh` if there is one, else the one shipped with litellm."""
    data_file, meta_file = _stored_map()
    if data_file.exists() and meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            models = json.loads(data_file.read_text())
            fetched = datetime.fromisoformat(meta["fetched_at"])
            return CostMap(models, f"LiteLLM cost map fetched {fetched:%Y-%m-%d %H:%M} UTC from {meta['url']}",
                           fetched.date())
        except (ValueError, KeyError, OSError):
            pass  # a damaged copy: fall back to the shipped map below
    return CostMap(_shipped_models(), f"LiteLLM cost map shipped with litellm {_litellm_version()} (offline copy)",
                   None)


def _fetch(url: str, timeout: float) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        return resp.read()


def refresh_cost_map(url: str = COST_MAP_URL, timeout: float = FETCH_TIMEOUT_S,
                     fetch: Callable[[str, float], bytes] | None = None) -> tuple[CostMap, str]:
    """Fetch the newest map and store it with its fetch date; offline, keep what we have and say so."""
    try:
        models = json.loads((fetch or _fetch)(url, timeout))
        if not isinstance(models, dict) or len(models) < 100:
            raise ValueError(f"not a cost map ({len(models) if isinstance(models, dict) else type(models).__name__})")
    except Exception as exc:  # offline, timeout, HTTP error, garbage: all mean "use what we have"
        current = load_cost_map()
        return current, (f"could not fetch the newest LiteLLM cost map from {url} ({type(exc).__name__}: {exc}); "
                         f"using the {current.source}")
    data_file, meta_file = _stored_map()
    now = datetime.now(timezone.utc)
    data_file.write_text(json.dumps(models))
    meta_file.write_text(json.dumps({"fetched_at": now.isoformat(timespec="seconds"), "url": url,
                                     "entries": len(models)}))
    current = load_cost_map()
    return current, f"fetched {len(models)} entries; using the {current.source}"


# ------------------------------------------------------------------------------ cost arithmetic
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


# ------------------------------------------------------------------------------ tables
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
        if (key, tokenizer) not in self.profiles:
            self.profiles[(key, tokenizer)] = dataset_profile(key, tokenizer)
        return self.profiles[(key, tokenizer)]

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
            tok = tokenizer_for(row.litellm_model)
            cost = None
            if key and p_in is not None:
                cost = session_cost(self.profile(key, tok), p_in, p_out, fewshot=fewshot)
            out.append({"provider": row.provider, "model": row.model, "litellm_model": row.litellm_model,
                        "finetunable": row.finetunable, "in_per_1m": p_in, "out_per_1m": p_out,
                        "status": status(row.retires or self.cost_map.deprecation(row.litellm_model), today),
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
                        "status": status(row.retires, today), "source": row.source,
                        "source_date": row.source_date, "note": row.note})
        return out


def _serving(row: FinetuneRow) -> str:
    """How the tuned model is billed: per token, per GPU-hour on a dedicated endpoint, or unknown."""
    if row.infer_input_per_1m is not None:
        return "per token"
    if row.dedicated_usd_per_hour:
        return f"dedicated {row.dedicated_gpu or 'GPU'} ${row.dedicated_usd_per_hour:.2f}/h"
    return "dedicated endpoint (price not public)" if "edicated" in row.note else "not public"


def inference_frame(prices: Prices, key: str, fewshot: int = DEFAULT_FEWSHOT) -> "pd.DataFrame":
    """Per-session cost of every candidate on a dataset, cheapest first (the Costs page table)."""
    import pandas as pd

    rows = []
    for r in prices.inference_rows(key, fewshot):
        c = r.pop("cost")
        rows.append({**{k: r[k] for k in ("provider", "model", "litellm_model", "finetunable", "status")},
                     "$/1M in": r["in_per_1m"], "$/1M out": r["out_per_1m"],
                     "$/session": c.usd if c else None, "$/1k sessions": c.usd * 1000 if c else None,
                     "agent turns": c.agent_turns if c else None,
                     "in tokens/turn": c.input_tokens / c.agent_turns if c and c.agent_turns else None,
                     "out tokens/turn": c.output_tokens / c.agent_turns if c and c.agent_turns else None,
                     "tokenizer": r["tokenizer"], "source date": r["source_date"], "note": r["note"]})
    return pd.DataFrame(rows).sort_values("$/session", na_position="last", kind="stable").reset_index(drop=True)


def finetune_frame(prices: Prices, key: str, epochs: int = DEFAULT_EPOCHS, good_only: bool = False) -> "pd.DataFrame":
    """Fine-tuning rows with the one-off training cost and tuned per-session cost on a dataset."""
    import pandas as pd

    rows = []
    for r in prices.finetune_rows(key, epochs, good_only):
        c = r["cost"]
        rows.append({"provider": r["provider"], "model": r["model"], "method": r["method"], "status": r["status"],
                     "train $/1M": r["train_per_1m"], "tuned $/1M in": r["in_per_1m"], "tuned $/1M out": r["out_per_1m"],
                     "training tokens × epochs": (r["training_tokens"] or 0) * epochs,
                     "training cost": r["training_cost"], "$/session": c.usd if c else None,
                     "serving": r["serving"], "source": r["source"], "source date": r["source_date"], "note": r["note"]})
    return pd.DataFrame(rows)


def filter_frame(df: "pd.DataFrame", providers: Sequence[str] = (), finetunable: bool | None = None,
                 hide_retired: bool = False) -> "pd.DataFrame":
    """The Costs page filters: providers (empty = all), finetunable yes/no/None, retired rows hidden."""
    keep = df["provider"].isin(providers) if providers else df["provider"].notna()
    if finetunable is not None:
        keep &= df["finetunable"] == finetunable
    if hide_retired:
        keep &= ~df["status"].str.startswith("retired")
    return df[keep].reset_index(drop=True)


def token_stats_frame(prices: Prices, key: str, fewshot: int = DEFAULT_FEWSHOT) -> "pd.DataFrame":
    """Token statistics of a dataset under every tokenizer the candidates use (one row each)."""
    import pandas as pd

    names = sorted({tokenizer_for(r.litellm_model) for r in prices.candidates} | {"approx"})
    rows = []
    for name in names:
        p = prices.profile(key, name)
        rows.append({"tokenizer": name, "sessions": p.sessions, "agent turns/session": p.agent_turns,
                     "history tokens/turn": p.input_per_turn, "output tokens/turn": p.output_per_turn,
                     "system prompt tokens": p.system_tokens, "prompt tokens (with few-shot)": p.prompt_tokens(fewshot),
                     "tokens/session": p.session_tokens, "training tokens/epoch": p.training_tokens()})
    return pd.DataFrame(rows)


def pareto_figure(points: list[dict]):
    """Plotly scatter of cost per session vs pass rate; the cheapest-for-its-quality models are marked."""
    import plotly.graph_objects as go

    ordered = sorted(points, key=lambda p: (p["cost_per_session"], -p["pass_rate"]))
    frontier, best = [], -1.0
    for p in ordered:  # no other model is both cheaper and at least as good
        if p["pass_rate"] > best:
            frontier.append(p)
            best = p["pass_rate"]
    fig = go.Figure()
    fig.add_scatter(x=[p["cost_per_session"] for p in points], y=[p["pass_rate"] for p in points],
                    mode="markers+text", text=[p["name"] for p in points], textposition="top center",
                    name="registry models", customdata=[[p["type"], p["cost_source"]] for p in points],
                    hovertemplate="%{text}<br>$%{x:.6f}/session<br>pass rate %{y:.0%}<br>%{customdata[0]}, "
                                  "cost %{customdata[1]}<extra></extra>")
    fig.add_scatter(x=[p["cost_per_session"] for p in frontier], y=[p["pass_rate"] for p in frontier],
                    mode="lines", line={"dash": "dot"}, name="cheapest for its pass rate")
    fig.update_layout(xaxis_title="cost per session (USD)", yaxis_title="CS-eval pass rate",
                      yaxis_tickformat=".0%", height=420, margin={"t": 30})
    return fig


def stale_rows(prices: Prices, days: int = 90, today: date | None = None) -> list[str]:
    """One line per price whose source is older than `days` (or undated)."""
    today = today or datetime.now(timezone.utc).date()
    lines = []
    for r in prices.inference_rows(None, today=today):
        if r["in_per_1m"] is not None and (r["source_date"] is None or (today - r["source_date"]).days > days):
            lines.append(f"{r['model']} (inference, {r['source_date'] or 'undated'})")
    for r in prices.finetune:
        if (today - r.source_date).days > days:
            lines.append(f"{r.provider} {r.model} {r.method} (fine-tuning, {r.source_date}, "
                         f"{(today - r.source_date).days} days old)")
    return lines


def available_datasets() -> dict[str, list[str]]:
    """customer → keys of its datasets whose files exist."""
    from core.dataset import list_customers

    return {c.name: [s.key for s in c.datasets().values() if s.available] for c in list_customers()}


def registry_points(prices: Prices, key: str, customer: str | None = None) -> list[dict]:
    """Registry models with a CS-eval pass rate on the customer's suite: cost per session
    (measured by CS eval, else estimated on the dataset) vs pass rate."""
    from core.registry import eval_summaries

    points = []
    for entry in _registry_entries():
        suite = customer or entry.get("customer")
        summary = eval_summaries(entry.get("metrics")).get(suite or "")
        if not summary or summary.get("pass_rate") is None or entry.get("customer") not in (None, suite):
            continue
        cost, how = summary.get("cost_per_session_usd"), "measured by CS eval"
        if cost is None:
            found = prices.cost_map.lookup(str(entry.get("access_point", "")))
            if found is None:
                continue
            # the template's few-shot examples (if any) are in its text; {policy} is the system prompt
            prof = prices.profile(key, tokenizer_for(entry.get("access_point")))
            template = counter(prof.tokenizer)([entry.get("prompt_template") or ""])[0]
            cost, how = session_cost(prof, *found, template_tokens=template).usd, f"estimated on {key}"
        points.append({"name": entry["name"], "type": entry.get("type"), "pass_rate": float(summary["pass_rate"]),
                       "error_rate": summary.get("error_rate"), "cost_per_session": float(cost), "cost_source": how})
    return points


def _registry_entries() -> list[dict]:
    """Registry entries as plain dicts; an absent or broken registry is just empty here."""
    try:
        from core.registry import load

        return [e.model_dump() for e in load().entries.values()]
    except ImportError:
        pass
    path = registry_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return []
    items = data.get("models", []) if isinstance(data, dict) else data
    return [e for e in items or [] if isinstance(e, dict) and e.get("name")]


# ------------------------------------------------------------------------------ cheapest options
def cheapest(prices: Prices, key: str, n: int = 3, fewshot: int = DEFAULT_FEWSHOT,
             epochs: int = DEFAULT_EPOCHS) -> dict[str, list[str]]:
    """The n cheapest prompt-engineered and fine-tuned options on a dataset, each with its arithmetic."""
    live = [r for r in prices.inference_rows(key, fewshot) if r["cost"] and not r["status"].startswith("retired")]
    live.sort(key=lambda r: r["cost"].usd)
    prompt = [f"{r['model']} ({r['litellm_model']}, {r['tokenizer']} tokens): {r['cost'].explain()}" for r in live[:n]]
    ft_rows = [r for r in prices.finetune_rows(key, epochs) if not r["status"].startswith("retired")]
    per_token = sorted((r for r in ft_rows if r["cost"]), key=lambda r: (r["cost"].usd, r["training_cost"] or 0))
    dedicated = sorted((r for r in ft_rows if not r["cost"] and r["training_cost"] is not None),
                       key=lambda r: r["training_cost"])
    tuned = []
    for r in per_token[:n]:
        tuned.append(f"{r['provider']} {r['model']} ({r['method']}): training {r['training_tokens']:,.0f} tokens × "
                     f"{epochs} epochs × ${fmt_price(r['train_per_1m'])}/1M = {fmt_usd(r['training_cost'])} once; "
                     f"per session {r['cost'].explain()}")
    best = per_token[0]["cost"].usd if per_token else None
    for r in dedicated[: n - len(tuned)]:
        line = (f"{r['provider']} {r['model']} ({r['method']}): training {r['training_tokens']:,.0f} tokens × {epochs} "
                f"epochs × ${fmt_price(r['train_per_1m'])}/1M = {fmt_usd(r['training_cost'])} once; serving: {r['serving']}")
        if r["dedicated_usd_per_hour"] and best:
            line += (f" → beats the cheapest per-token fine-tune only above "
                     f"${r['dedicated_usd_per_hour']:.2f}/h ÷ {fmt_usd(best)} = "
                     f"{r['dedicated_usd_per_hour'] / best:,.0f} sessions/hour")
        tuned.append(line)
    return {"prompt": prompt, "finetune": tuned}


# ------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.pricing", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("refresh", help="fetch LiteLLM's newest cost map; offline, keep the shipped one")
    sub.add_parser("check", help="validate the price YAML files")
    table = sub.add_parser("table", help="per-session cost of every candidate and fine-tune on a dataset")
    table.add_argument("--dataset", default="twitter_care/dev")
    table.add_argument("--fewshot", type=int, default=DEFAULT_FEWSHOT)
    table.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    cheap = sub.add_parser("cheapest", help="3 cheapest prompt-engineered and fine-tuned options per client")
    cheap.add_argument("--n", type=int, default=3)
    readme = sub.add_parser("readme", help="rewrite the price section of README.md between its markers")
    readme.add_argument("--readme", default=str(ROOT / "README.md"))
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.cmd](args)
    except (PriceFileError, ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_refresh(args) -> int:
    _, message = refresh_cost_map()
    print(message)
    return 0


def _cmd_check(args) -> int:
    _, cands = load_candidates()
    _, rows = load_finetune()
    cost_map = load_cost_map()
    missing = [r.litellm_model for r in cands if r.input_per_1m is None and cost_map.prices(r.litellm_model) is None]
    print(f"{len(cands)} candidates, {len(rows)} fine-tuning rows: valid. {cost_map.source}.")
    for m in missing:
        print(f"warning: {m} is not in the cost map and has no input_per_1m/output_per_1m")
    return 1 if missing else 0


def _cmd_table(args) -> int:
    import pandas as pd

    prices = Prices.load()
    prof = prices.profile(args.dataset, "approx")
    print(f"{args.dataset}: {prof.sessions} sessions, {prof.agent_turns:.2f} agent turns/session, "
          f"{prof.input_per_turn:,.0f} history + {prof.prompt_tokens(args.fewshot):,.0f} prompt tokens in, "
          f"{prof.output_per_turn:,.0f} out per turn (approx tokens). {prices.cost_map.source}.\n")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        inf = inference_frame(prices, args.dataset, args.fewshot)
        print(inf[["provider", "model", "status", "$/1M in", "$/1M out", "$/session", "$/1k sessions",
                   "tokenizer"]].to_string(index=False))
        print()
        ft = finetune_frame(prices, args.dataset, args.epochs)
        print(ft[["provider", "model", "method", "status", "train $/1M", "training cost", "$/session",
                  "serving"]].to_string(index=False))
    return 0


def _cmd_cheapest(args) -> int:
    prices = Prices.load()
    print(prices.cost_map.source)
    for customer, keys in available_datasets().items():
        if not keys:
            print(f"\n{customer}: no dataset file available")
            continue
        options = cheapest(prices, keys[0], args.n)
        print(f"\n{customer} (dataset {keys[0]})\n  prompt-engineered agent:")
        for i, line in enumerate(options["prompt"], 1):
            print(f"    {i}. {line}")
        print("  fine-tuned agent:")
        for i, line in enumerate(options["finetune"], 1):
            print(f"    {i}. {line}")
    return 0


def _cmd_readme(args) -> int:
    path = Path(args.readme)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    from core.prices.readme import find_markers, readme_section, update_readme

    find_markers(path)  # fail fast, before measuring the datasets
    changed = update_readme(path, readme_section(Prices.load()))
    print(f"{path}: price tables {'rewritten' if changed else 'unchanged (already current)'}")
    return 0


_COMMANDS = {"refresh": _cmd_refresh, "check": _cmd_check, "table": _cmd_table, "cheapest": _cmd_cheapest,
             "readme": _cmd_readme}

if __name__ == "__main__":
    sys.exit(main())
