"""Price rows: the curated YAML files (candidates, fine-tuning) and the user's local files merged over them.

    python -m core.pricing check     # validate them

A local row ($CSFORGE_HOME/pricing/{candidates,finetune}.local.yaml, or $CSFORGE_CANDIDATES /
$CSFORGE_FINETUNE) replaces the curated row with the same key; other local rows are added.
"""
from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.paths import home_dir

PRICES_DIR = Path(__file__).resolve().parent
CANDIDATES_FILE = PRICES_DIR / "candidates.yaml"
FINETUNE_FILE = PRICES_DIR / "finetune.yaml"
RESEARCH_FILE = PRICES_DIR / "RESEARCH.md"


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
    jobs_end: date | None = None  # the provider stops starting new fine-tuning jobs; tuned models serve until `retires`
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

