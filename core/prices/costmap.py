"""LiteLLM's model cost map: the newest fetched copy, else the one shipped with litellm (offline).

    python -m core.pricing refresh     # fetch the newest map; offline, keep what we have and say so

The map is read from the JSON file LiteLLM ships (what `litellm.model_cost` holds offline) without the
8 s `import litellm`. A fetched map is stored with its fetch time under $CSFORGE_HOME/pricing/ and
preferred from then on.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, NamedTuple

from core.paths import home_dir
from core.prices.tokens import litellm_dir

# LiteLLM's own default (litellm.model_cost_map_url); LiteLLM honours the same variable.
DEFAULT_URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
COST_MAP_URL = os.environ.get("LITELLM_MODEL_COST_MAP_URL", DEFAULT_URL)
FETCH_TIMEOUT_S = 5  # a refresh must not hang a page or a cron job; the map is ~3 MB
MIN_ENTRIES = 100  # fewer entries than this is an error page or a truncated download, not a cost map


def cost_map_url() -> str:
    """Where `refresh` fetches from, read at call time so a test or a cron line can point it elsewhere."""
    return os.environ.get("LITELLM_MODEL_COST_MAP_URL", DEFAULT_URL)


@dataclass
class CostMap:
    """LiteLLM's model → price map and where it came from."""

    models: dict[str, dict]
    source: str  # one line for people: which map, from where, when (day precision: the README shows it)
    fetched: date | None  # None: the copy shipped with the installed litellm
    fetched_at: datetime | None = None

    def prices(self, model: str) -> tuple[float, float] | None:
        """(input, output) USD per 1M tokens, or None when the map lacks the model."""
        entry = self.models.get(model)
        if not isinstance(entry, dict) or entry.get("input_cost_per_token") is None:
            return None
        # rounded: 1e-07 * 1e6 is 0.09999999999999999 in floats; prices have at most 6 decimals per 1M
        return (round(entry["input_cost_per_token"] * 1e6, 6),
                round((entry.get("output_cost_per_token") or 0.0) * 1e6, 6))

    def key_for(self, access_point: str) -> str | None:
        """The map key of an access point: exact, else the base of an OpenAI fine-tune
        ("ft:gpt-4o-mini-2024-07-18:org::id" → "ft:gpt-4o-mini-2024-07-18")."""
        if access_point in self.models:
            return access_point
        if access_point.startswith("ft:"):
            base = ":".join(access_point.split(":")[:2])
            return base if base in self.models else None
        return None

    def lookup(self, access_point: str) -> tuple[float, float] | None:
        """Prices of a registry access point; local models cost nothing per token."""
        if access_point.startswith("local/"):
            return 0.0, 0.0
        key = self.key_for(access_point)
        return self.prices(key) if key else None

    def deprecation(self, model: str) -> date | None:
        entry = self.models.get(self.key_for(model) or model)
        raw = entry.get("deprecation_date") if isinstance(entry, dict) else None
        try:
            return date.fromisoformat(str(raw)) if raw else None
        except ValueError:
            return None

    def provider(self, model: str) -> str:
        """LiteLLM's provider of a model ("gemini", "openai", "vertex_ai-language-models", ...)."""
        entry = self.models.get(self.key_for(model) or model)
        if isinstance(entry, dict) and entry.get("litellm_provider"):
            return str(entry["litellm_provider"])
        return model.split("/", 1)[0] if "/" in model else "openai"  # bare names are OpenAI's in LiteLLM


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


@lru_cache(maxsize=4)
def _read_stored(data_file: Path, stamp: tuple) -> CostMap:
    """Parse the stored map once per (file, mtime, size): pages call load_cost_map on every rerun."""
    meta = json.loads(data_file.with_name("model_cost_map.meta.json").read_text(encoding="utf-8"))
    models = json.loads(data_file.read_text(encoding="utf-8"))
    fetched = datetime.fromisoformat(meta["fetched_at"])
    return CostMap(models, f"LiteLLM cost map fetched {fetched:%Y-%m-%d} from {meta['url']}", fetched.date(), fetched)


def shipped_map() -> CostMap:
    """The map shipped with the installed litellm."""
    source = f"LiteLLM cost map shipped with litellm {_litellm_version()} (offline copy)"
    return CostMap(_shipped_models(), source, None)


def load_cost_map() -> CostMap:
    """The map fetched by `refresh` if there is one, else the one shipped with litellm."""
    data_file, meta_file = _stored_map()
    if data_file.exists() and meta_file.exists():
        try:
            st = data_file.stat()
            return _read_stored(data_file, (st.st_mtime_ns, st.st_size, meta_file.stat().st_mtime_ns))
        except (ValueError, KeyError, OSError):
            pass  # a damaged copy: fall back to the shipped map below
    return shipped_map()


def _fetch(url: str, timeout: float) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (an https URL or a test server)
        return resp.read()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Refresh(NamedTuple):
    cost_map: CostMap  # what the tables use now
    message: str  # one line for people, naming the fallback when the fetch failed
    fetched: bool  # False: the fetch failed and an older map is in use


def refresh_cost_map(url: str | None = None, timeout: float = FETCH_TIMEOUT_S,
                     fetch: Callable[[str, float], bytes] | None = None) -> Refresh:
    """Fetch the newest map and store it with its fetch time; offline, keep what we have and say so."""
    url = url or cost_map_url()
    try:
        models = json.loads((fetch or _fetch)(url, timeout))
        if not isinstance(models, dict) or len(models) < MIN_ENTRIES:
            raise ValueError(f"not a cost map ({len(models) if isinstance(models, dict) else type(models).__name__})")
    except Exception as exc:  # offline, timeout, HTTP error, garbage: all mean "use what we have"
        current = load_cost_map()
        return Refresh(current, f"could not fetch the newest LiteLLM cost map from {url} ({type(exc).__name__}: "
                                f"{exc}); using the {current.source}", False)
    data_file, meta_file = _stored_map()
    now = datetime.now(timezone.utc)
    _write_atomic(data_file, json.dumps(models))
    _write_atomic(meta_file, json.dumps({"fetched_at": now.isoformat(timespec="seconds"), "url": url,
                                         "entries": len(models)}))
    current = load_cost_map()
    return Refresh(current, f"fetched {len(models)} entries; using the {current.source}", True)


def last_refresh(cost_map: CostMap) -> str:
    """'last refreshed <time> UTC' or why there is no refresh yet (the Costs page shows it)."""
    if cost_map.fetched_at is None:
        return "never refreshed here: using the map shipped with litellm (offline copy)"
    return f"last refreshed {cost_map.fetched_at:%Y-%m-%d %H:%M} UTC"
