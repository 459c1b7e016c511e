"""The `local` LiteLLM provider: transformers causal LMs (plus peft LoRA adapters) in-process.

    python -m core.local_provider convert   # convert the embedded GGUF once (about 10-40 s;
                                            # and its Q8_0 copy when llama-cpp-python is installed)

`core.llm` registers `handler()` in `litellm.custom_provider_map` under the name "local",
so "local/<target>" model strings go through LiteLLM like every other provider. A target
is a registry name (base, or finetune with `adapter_path`), the embedded model name, or a
model/adapter folder. Loaded models are cached per (base folder, adapter folder) and each
has a lock around generate, so threads (Streamlit sessions, waitress workers, eval
workers) share one copy safely.

Where models are (the embedded GGUF, its converted folder, resolving targets) is
core.local_targets; generation (prefix KV cache, int8 decode, stop hook) is core.local_decode,
or core.llama_cpp_engine for the embedded base model when llama-cpp-python is installed
(`./setup.sh --llama-cpp`; CSFORGE_LOCAL_ENGINE picks: auto, llama_cpp, transformers).
core.llm calls generate()/stream() directly, without LiteLLM. Importing this module is cheap: torch, transformers, peft and litellm load on first use.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from core import llama_cpp_engine, local_decode, local_targets, threads
from core.local_targets import (  # noqa: F401  (re-exported: the provider's public names)
    EMBEDDED_MODEL, LocalModelError, embedded_available, embedded_folder, ensure_embedded, gguf_path)
# A callable set by the caller (core.serve): True means stop generating now (client gone, deadline).
# Checked between prefill chunks and after every token: the one stop hook of a local generation.
STOP: ContextVar[Any] = ContextVar("csforge_local_stop", default=None)


class ReplyTokens:
    """The token ids this model generated for its recent replies, by reply text.

    A reply comes back in the next turn's history as text, and its text re-tokenised is not
    always the ids that were generated (a model may emit a non-canonical split, or bytes
    that decode to U+FFFD). Where they differ, the prefix cache would stop at that point
    and re-read the rest of the conversation; putting the generated ids back keeps the
    whole earlier turn reusable. Only replies whose ids differ from their text's are kept.
    """

    def __init__(self, size: int = 256):
        self.size = size
        self.by_text: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def remember(self, tokenizer: Any, text: str, ids: list[int]) -> None:
        if not text or _text_ids(tokenizer, text) == list(ids):
            return
        with self._lock:
            self.by_text.pop(text, None)
            self.by_text[text] = list(ids)
            while len(self.by_text) > self.size:
                self.by_text.pop(next(iter(self.by_text)), None)

    def restore(self, tokenizer: Any, messages: list[dict], ids: list[int]) -> list[int]:
        """`ids` (the prompt of `messages`) with each remembered reply's tokens put back.

        A reply is replaced only where it sits: right after the prompt of the messages
        before it, so the same words in the policy or a user message are never touched.
        """
        out, shift = list(ids), 0
        for i, m in enumerate(messages):
            with self._lock:
                generated = self.by_text.get(m.get("content") or "") if m.get("role") == "assistant" and i else None
            if generated is None:
                continue
            at = len(_prompt_ids(tokenizer, messages[:i]))  # the template's header of this reply ends here
            canonical = _text_ids(tokenizer, m["content"])
            if ids[at:at + len(canonical)] != canonical:  # a template that renders history differently
                continue
            out[at + shift:at + shift + len(canonical)] = generated
            shift += len(generated) - len(canonical)
        return out


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Loaded:
    """A model ready to generate, with the lock that serialises generate on it."""

    model: Any  # the transformers model, or None when `engine` generates
    tokenizer: Any
    key: tuple[str, str | None, str]  # (base folder, adapter folder, engine)
    load_s: float = 0.0
    context: int | None = None  # the most tokens prompt + reply may hold
    lock: threading.Lock = field(default_factory=threading.Lock)
    eos_ids: set[int] = field(default_factory=set)
    bf16_prefill: bool = False
    prefix: local_decode.PrefixCache = field(default_factory=local_decode.PrefixCache)
    decoder: Any = None  # the int8 copy for one-token steps, or None: the model itself
    engine: Any = None  # a llama_cpp_engine.Engine, or None: transformers generates
    replies: ReplyTokens = field(default_factory=lambda: ReplyTokens())



_CACHE: dict[tuple[str, str | None, str], Loaded] = {}
_LOAD_LOCKS: dict[tuple[str, str | None, str], threading.Lock] = {}
_CACHE_LOCK = threading.Lock()


def resolve(target: str, *, prepare: bool = True) -> tuple[Path, Path | None]:
    """(base model folder, adapter folder or None) for a local target, by the registry in use."""
    from core import registry

    return local_targets.resolve(target, registry.load().entries, registry.resolve_path, prepare=prepare)


# ---------------------------------------------------------------- loading

def load(target: str, engine: str | None = None) -> Loaded:
    """Cached model + tokenizer for a local target (registry name, embedded name or folder).

    `engine` ('llama_cpp' or 'transformers') overrides the choice core.llama_cpp_engine makes."""
    base, adapter = resolve(target)
    engine = engine or llama_cpp_engine.chosen_for(base, adapter)
    key = (str(base), str(adapter) if adapter else None, engine)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _LOAD_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # two threads asking for the same model load it once
        if key not in _CACHE:
            _CACHE[key] = _load_uncached(base, adapter, key)
        return _CACHE[key]


def _load_uncached(base: Path, adapter: Path | None, key: tuple) -> Loaded:
    """Load for key = (base, adapter, engine): engine 'llama_cpp' or 'transformers'."""
    local_targets.offline()
    start = time.perf_counter()
    threads.configure()  # before the first torch op: CSFORGE_TORCH_THREADS or the free cores
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter if _has_tokenizer(adapter) else base)
        if key[2] == "llama_cpp":
            try:
                return _load_llama_cpp(base, adapter, tokenizer, key, start)
            except (LocalModelError, ImportError, RuntimeError, OSError) as exc:
                if llama_cpp_engine.wanted() == "llama_cpp":
                    raise LocalModelError(f"llama.cpp engine: {str(exc).splitlines()[0]}") from exc
                print(f"llama.cpp engine unavailable ({str(exc).splitlines()[0]}); using transformers",
                      file=sys.stderr)
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
    return Loaded(model, tokenizer, key, time.perf_counter() - start,
                  context=getattr(model.config, "max_position_embeddings", None),
                  eos_ids=_eos_ids(getattr(model, "generation_config", None), tokenizer),
                  bf16_prefill=local_decode.prefill_dtype() == "bf16", decoder=decoder)


def _load_llama_cpp(base: Path, adapter: Path | None, tokenizer: Any, key: tuple, start: float) -> Loaded:
    """The embedded model (or a LoRA finetune of it, merged) on llama.cpp, from a Q8_0 GGUF,
    with the HF tokenizer for templates and text."""
    from transformers import GenerationConfig

    path = llama_cpp_engine.ensure_q8() if adapter is None else llama_cpp_engine.ensure_merged(adapter)
    engine = llama_cpp_engine.Engine(path, threads.choose())
    if not engine.same_tokens(tokenizer, "您好，订单 12345 什么时候发货？Hello, where is my order?"):
        raise LocalModelError(f"llama.cpp's vocabulary differs from {base}'s tokenizer; "
                              f"set {llama_cpp_engine.ENGINE_VAR}=transformers")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        generation = GenerationConfig.from_pretrained(base)
    except OSError:
        generation = None
    return Loaded(None, tokenizer, key, time.perf_counter() - start, context=engine.context,
                  eos_ids=_eos_ids(generation, tokenizer), engine=engine)


def _eos_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a reply: the generation config's (one or a list) and the tokenizer's."""
    found = getattr(generation_config, "eos_token_id", None)
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


def _tokens(loaded: Loaded, *, temperature: float, max_tokens: int,
            timeout: float | None, seed: int | None, ids: list[int]) -> Iterator[int]:
    """Generated token ids, under the model's lock (released when the caller stops iterating).

    One generation at a time per model: on a CPU, two at once only fight for the cores.
    The timeout counts from when this call gets the model, so waiting callers (eval
    workers, sandbox users) queue instead of timing out on each other's work.
    """
    with loaded.lock:
        deadline = time.monotonic() + float(timeout) if timeout else None
        if loaded.engine is not None:
            yield from loaded.engine.tokens(ids, max_tokens=max_tokens, eos_ids=loaded.eos_ids,
                                            temperature=temperature, seed=seed, deadline=deadline,
                                            should_stop=STOP.get())
            return
        yield from local_decode.decode(
            loaded.model, ids, max_tokens=max_tokens, eos_ids=loaded.eos_ids, temperature=temperature,
            seed=seed, deadline=deadline, should_stop=STOP.get(), prefix_cache=loaded.prefix,
            bf16_prefill=loaded.bf16_prefill, decoder=loaded.decoder)


def generate(loaded: Loaded, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256,
             timeout: float | None = None, seed: int | None = 0) -> tuple[str, int, int]:
    """(reply text, input tokens, output tokens) with the model's own chat template.

    `timeout` covers the prefill and the generation (what was generated by then is returned);
    `STOP` (set by core.serve) is checked between prefill chunks and after every token.
    """
    ids = loaded.replies.restore(loaded.tokenizer, messages, _prompt_ids(loaded.tokenizer, messages))
    new = list(_tokens(loaded, temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                       seed=seed, ids=ids))
    text = loaded.tokenizer.decode(new, skip_special_tokens=True).strip().rstrip("\ufffd")
    loaded.replies.remember(loaded.tokenizer, text, new)
    return text, len(ids), len(new)


def stream(loaded: Loaded, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256,
           timeout: float | None = None, seed: int | None = 0) -> Iterator[str | tuple[int, int]]:
    """Yield text pieces as they are generated, then (input tokens, output tokens).

    Closing the iterator early (a client that went away) stops generating and frees the model.
    """
    ids = loaded.replies.restore(loaded.tokenizer, messages, _prompt_ids(loaded.tokenizer, messages))
    new: list[int] = []
    sent = ""
    tokens = _tokens(loaded, temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                     seed=seed, ids=ids)
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
    loaded.replies.remember(loaded.tokenizer, text, new)
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
            loaded, opts = loaded_or_error(model), options(optional_params, timeout)
            text, n_in, n_out = generate(loaded, messages, **opts)
            model_response.choices[0].message.content = text
            model_response.choices[0].finish_reason = "length" if n_out >= opts["max_tokens"] else "stop"
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
        if llama_cpp_engine.installed() and llama_cpp_engine.wanted() != "transformers":
            t = time.perf_counter()
            print(llama_cpp_engine.ensure_q8(), f"{time.perf_counter() - t:.1f}s")
    elif sys.argv[1:] == ["engine"]:
        print(f"{EMBEDDED_MODEL}: {llama_cpp_engine.describe()}")
    else:
        print(__doc__.splitlines()[2])
        print("    python -m core.local_provider engine    # which engine the embedded model runs on, and why")
