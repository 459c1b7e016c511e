"""The local decode loop (prefix KV cache, stop hook, deadline) and the torch thread policy."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core import local_decode, local_provider, threads
from tests.helpers_llm import tiny_model_dir

CHAT = [{"role": "system", "content": "你是客服。Policy: refunds within 7 days."},
        {"role": "user", "content": "我的订单什么时候到？"}]


@pytest.fixture
def loaded(monkeypatch):
    monkeypatch.setenv(local_decode.PREFILL_VAR, "fp32")
    monkeypatch.setenv(local_decode.DECODE_VAR, "fp32")
    local_provider.clear_cache()
    model = local_provider.load(str(tiny_model_dir()))
    model.prefix.clear()
    return model


def _hf_greedy(loaded, ids, n):
    import torch

    with torch.inference_mode():
        out = loaded.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=n, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def _decode(loaded, ids, n, **kw):
    return list(local_decode.decode(loaded.model, ids, max_tokens=n, eos_ids=loaded.eos_ids, **kw))


def test_greedy_decode_matches_transformers_generate(loaded):
    ids = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    assert _decode(loaded, ids, 20) == _hf_greedy(loaded, ids, 20)


def test_prefix_cache_reuses_earlier_turns_with_identical_tokens(loaded):
    cache = local_decode.PrefixCache()
    first = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    reply = _decode(loaded, first, 12, prefix_cache=cache)
    turn2 = CHAT + [{"role": "assistant", "content": loaded.tokenizer.decode(reply)},
                    {"role": "user", "content": "还有，可以退货吗？"}]
    ids = local_provider._prompt_ids(loaded.tokenizer, turn2)
    cached = _decode(loaded, ids, 12, prefix_cache=cache)
    assert cache.hits == 1 and cache.reused_tokens >= len(first)  # the whole first prompt was not re-read
    assert cached == _decode(loaded, ids, 12)  # and the reply is what a fresh prefill gives
    # the same prompt again: served from the cache with no prefill, token for token the same
    again = _decode(loaded, ids, 12, prefix_cache=cache, bf16_prefill=True)
    assert again == cached and cache.hits == 2 and cache.reused_tokens >= len(first) + len(ids)


def test_a_reply_whose_text_retokenises_differently_still_reuses_the_whole_turn(loaded):
    """A random model emits non-canonical token splits: without the generated ids put back,
    the next turn's cache stops inside the reply and re-reads the rest."""
    text, n_in, n_out = local_provider.generate(loaded, CHAT, max_tokens=40)
    generated = loaded.replies.by_text[text]
    assert list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) != generated  # the hard case
    turn2 = CHAT + [{"role": "assistant", "content": text}, {"role": "user", "content": "还有，可以退货吗？"}]
    plain = local_provider._prompt_ids(loaded.tokenizer, turn2)
    restored = loaded.replies.restore(loaded.tokenizer, turn2, plain)
    assert restored[:n_in + n_out] == local_provider._prompt_ids(loaded.tokenizer, CHAT) + generated
    before = loaded.prefix.reused_tokens
    local_provider.generate(loaded, turn2, max_tokens=4)
    assert loaded.prefix.reused_tokens - before == n_in + n_out - 1  # everything but the last generated token
    # an edited reply is not a remembered one: the template's tokens are kept as they are
    edited = CHAT + [{"role": "assistant", "content": text + "!"}, turn2[-1]]
    ids = local_provider._prompt_ids(loaded.tokenizer, edited)
    assert loaded.replies.restore(loaded.tokenizer, edited, ids) == ids


def test_a_remembered_reply_is_put_back_only_where_the_reply_sits(loaded):
    """The same words in the policy or a user message are left alone."""
    text, _, _ = local_provider.generate(loaded, CHAT, max_tokens=40)
    generated = loaded.replies.by_text[text]
    messages = [{"role": "system", "content": f"Say exactly: {text}"}, {"role": "user", "content": text},
                {"role": "assistant", "content": text}, {"role": "user", "content": "好的"}]
    plain = local_provider._prompt_ids(loaded.tokenizer, messages)
    head = local_provider._prompt_ids(loaded.tokenizer, messages[:2])
    restored = loaded.replies.restore(loaded.tokenizer, messages, plain)
    canonical = list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert restored[:len(head)] == head  # system prompt and user message untouched
    assert restored[len(head):len(head) + len(generated)] == generated
    assert restored[len(head) + len(generated):] == plain[len(head) + len(canonical):]


def test_remembering_replies_is_bounded_and_skips_canonical_ones(loaded):
    memo = local_provider.ReplyTokens(size=3)
    tok = loaded.tokenizer
    for word in ("one", "two", "three", "four"):
        memo.remember(tok, word, [7, 7, 7])
    assert list(memo.by_text) == ["two", "three", "four"]
    memo.remember(tok, "plain text", list(tok("plain text", add_special_tokens=False)["input_ids"]))
    assert "plain text" not in memo.by_text  # nothing to put back: not stored


def test_prefix_cache_evicts_oldest_past_its_limits():
    class Fake:
        def crop(self, n):
            self.n = n
    cache = local_decode.PrefixCache(slots=2, max_tokens=10)
    for start in (1, 2, 3):
        cache.put([start] * 4, Fake())
    assert [s.ids[0] for s in cache.slots] == [2, 3]
    cache.put([9] * 8, Fake())  # 4 + 8 tokens > 10: the older one goes
    assert [s.ids[0] for s in cache.slots] == [9]
    got, n, logits = cache.take([9] * 8)
    assert n == 7 and got.n == -1 and logits is None and not cache.slots  # no logits kept: the last token re-runs
    cache.put([4, 5, 6, 7, 8], Fake(), prompt_len=3, logits="L")
    got, n, logits = cache.take([4, 5, 6])  # the same prompt again: its stored logits, nothing re-run
    assert (n, logits, got.n) == (3, "L", -2)


def test_stop_hook_and_deadline_end_generation(loaded):
    ids = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    seen: list[int] = []
    out = list(local_decode.decode(loaded.model, ids, max_tokens=50, eos_ids=set(),
                                   should_stop=lambda: len(seen) >= 3 or seen.append(1) is not None and False))
    assert len(out) == 3
    assert _decode(loaded, ids, 50, deadline=time.monotonic() - 1) == []  # a spent deadline stops the prefill


def test_the_stop_hook_core_serve_sets_reaches_generation(loaded):
    calls: list[int] = []
    token = local_provider.STOP.set(lambda: len(calls) >= 3 or calls.append(1) is None and False)
    try:
        text, n_in, n_out = local_provider.generate(loaded, CHAT, max_tokens=50)
    finally:
        local_provider.STOP.reset(token)
    assert n_out == 3 and not loaded.lock.locked()  # false before the prefill and after tokens 1-2, true after 3


def test_timeout_returns_what_was_generated_and_frees_the_model(loaded):
    text, n_in, n_out = local_provider.generate(loaded, CHAT, max_tokens=10_000, timeout=0.3)
    assert 0 < n_out < 10_000 and n_in > 10
    assert not loaded.lock.locked()


def test_abandoned_stream_releases_the_model_lock(loaded):
    pieces = local_provider.stream(loaded, CHAT, max_tokens=200)
    assert isinstance(next(pieces), str)
    assert loaded.lock.locked()
    pieces.close()
    assert not loaded.lock.locked()


def test_stream_pieces_join_to_the_generated_reply(loaded):
    items = list(local_provider.stream(loaded, CHAT, max_tokens=24))
    text, n_in, n_out = local_provider.generate(loaded, CHAT, max_tokens=24)
    assert items[-1] == (n_in, n_out)
    assert "".join(items[:-1]).strip() == text


def test_sampling_is_reproducible_by_seed(loaded):
    ids = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    a = _decode(loaded, ids, 16, temperature=1.0, seed=7)
    assert a == _decode(loaded, ids, 16, temperature=1.0, seed=7)
    assert a != _decode(loaded, ids, 16, temperature=1.0, seed=8)


def test_prefill_dtype_setting(monkeypatch):
    monkeypatch.setenv(local_decode.PREFILL_VAR, "fp32")
    assert local_decode.prefill_dtype() == "fp32"
    monkeypatch.setenv(local_decode.PREFILL_VAR, "auto")
    assert local_decode.prefill_dtype() == ("bf16" if local_decode.cpu_has_bf16() else "fp32")
    assert local_decode.prefill_dtype("cuda") == "fp32"
    monkeypatch.setenv(local_decode.PREFILL_VAR, "half")
    with pytest.raises(ValueError, match="CSFORGE_LOCAL_PREFILL"):
        local_decode.prefill_dtype()


def test_int8_decoder_shares_the_cache_and_tracks_fp32(loaded, monkeypatch):
    import torch

    ids = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    decoder = local_decode.int8_decoder(loaded.model)
    assert isinstance(loaded.model.lm_head, torch.nn.Linear)  # the fp32 model is left as it was
    assert type(decoder.lm_head) is not torch.nn.Linear
    fp32 = _decode(loaded, ids, 24)
    int8 = _decode(loaded, ids, 24, decoder=decoder)
    assert len(int8) == 24 and int8[0] == fp32[0]  # the first token comes from the fp32 prefill
    assert sum(a == b for a, b in zip(int8, fp32)) >= 6  # close to the fp32 model, not noise
    monkeypatch.setenv(local_decode.DECODE_VAR, "auto")
    assert local_decode.decode_dtype("cuda") == "fp32"
    monkeypatch.setenv(local_decode.DECODE_VAR, "int4")
    with pytest.raises(ValueError, match="CSFORGE_LOCAL_DECODE"):
        local_decode.decode_dtype()


def test_bf16_prefill_keeps_the_cache_fp32_and_decodes(loaded):
    ids = local_provider._prompt_ids(loaded.tokenizer, CHAT)
    cache = local_decode.PrefixCache()
    out = _decode(loaded, ids, 8, bf16_prefill=True, prefix_cache=cache)
    assert len(out) == 8
    layer = cache.slots[0].cache.layers[0]
    assert str(layer.keys.dtype) == "torch.float32" and layer.keys.shape[-2] == len(ids) + 7


def test_threads_follow_the_variable_then_the_free_cores(monkeypatch):
    monkeypatch.setenv(threads.THREADS_VAR, "3")
    assert threads.choose(n_cores=2, load=5.0) == 3
    monkeypatch.delenv(threads.THREADS_VAR)
    assert threads.choose(n_cores=2, load=0.1) == 2
    assert threads.choose(n_cores=2, load=1.2) == 1
    assert threads.choose(n_cores=2, load=9.0) == 1  # a saturated box still gets one thread
    assert threads.choose(n_cores=16, load=4.0) == 12
    for bad in ("0", "two"):
        monkeypatch.setenv(threads.THREADS_VAR, bad)
        with pytest.raises(ValueError, match=threads.THREADS_VAR):
            threads.choose()


def test_importing_core_sets_a_passive_openmp_wait_policy():
    import subprocess
    import sys

    from core.paths import ROOT

    code = "import os; os.environ.pop('OMP_WAIT_POLICY', None); import core; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


_HEAP_PROBE = """
import ctypes, os, sys
if sys.argv[1] == "core":
    import core  # holds glibc's mmap threshold
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)  # glibc now raises the threshold
before = rss_mb()
blocks = [libc.malloc(1 << 20) for _ in range(200)]  # activation-sized buffers, as a training step makes
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
for b in blocks[:-1]:  # all but the newest freed: a heap cannot shrink below a live block
    libc.free(b)
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_importing_core_returns_freed_activation_buffers_to_the_system():
    """Without the held threshold the 199 freed MiB stay resident; with it they are unmapped."""
    from core.paths import ROOT

    def kept_mb(mode: str) -> float:
        env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
        out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True)
        return float(out.stdout)

    assert kept_mb("plain") > 150  # glibc's default behaviour: the probe would catch a no-op
    assert kept_mb("core") < 20
