"""The opt-in llama.cpp engine: which targets it takes, and generation on the embedded model.

The choice tests run everywhere; the generation tests need llama-cpp-python
(`./setup.sh --llama-cpp`, which .ci/run does) and the embedded GGUF, and are skipped without them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core import llama_cpp_engine as lce
from core import local_provider, local_targets

CHAT = [{"role": "system", "content": "你是网店客服。退货政策：签收后 7 天内可退，运费由买家承担。"},
        {"role": "user", "content": "我的耳机还没发货，订单号 12345，什么时候能到？"}]

needs_engine = pytest.mark.skipif(not (lce.installed() and local_targets.gguf_path()),
                                  reason="llama-cpp-python or the embedded GGUF not installed (./setup.sh --llama-cpp)")


# ---------------------------------------------------------------- which engine

def test_engine_variable_is_validated(monkeypatch):
    monkeypatch.setenv(lce.ENGINE_VAR, "vllm")
    with pytest.raises(local_targets.LocalModelError, match="CSFORGE_LOCAL_ENGINE='vllm'"):
        lce.wanted()


def test_only_the_embedded_base_model_goes_to_llama_cpp(monkeypatch, tmp_path):
    monkeypatch.setattr(lce, "installed", lambda: True)
    monkeypatch.setattr(lce, "gguf_path", lambda: tmp_path / "model.gguf")
    embedded = local_targets.embedded_folder()
    monkeypatch.delenv(lce.ENGINE_VAR, raising=False)
    assert lce.chosen_for(embedded, None) == "llama_cpp"
    assert lce.chosen_for(embedded, tmp_path / "adapter") == "transformers"  # no adapter_config.json there
    assert lce.chosen_for(tmp_path, None) == "transformers"  # any other model folder
    monkeypatch.setenv(lce.ENGINE_VAR, "transformers")
    assert lce.chosen_for(embedded, None) == "transformers"


def test_asking_for_llama_cpp_without_it_says_how_to_install(monkeypatch):
    monkeypatch.setattr(lce, "installed", lambda: False)
    monkeypatch.delenv(lce.ENGINE_VAR, raising=False)
    assert lce.chosen_for(local_targets.embedded_folder(), None) == "transformers"  # auto falls back
    monkeypatch.setenv(lce.ENGINE_VAR, "llama_cpp")
    with pytest.raises(local_targets.LocalModelError, match=r"setup.sh --llama-cpp"):
        lce.chosen_for(local_targets.embedded_folder(), None)


# ---------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def engine_home(tmp_path_factory):
    local_provider.clear_cache()  # a model another module loaded under its own $CSFORGE_HOME
    return tmp_path_factory.mktemp("engine_home")


@pytest.fixture
def loaded(engine_home, monkeypatch):
    """The embedded model on llama.cpp, loaded once for the module under its own $CSFORGE_HOME."""
    monkeypatch.setenv("CSFORGE_HOME", str(engine_home))
    monkeypatch.setenv(lce.ENGINE_VAR, "llama_cpp")
    return local_provider.load(local_targets.EMBEDDED_MODEL)


def _ids(loaded, messages):
    return local_provider._prompt_ids(loaded.tokenizer, messages)


def _fresh(loaded) -> None:
    loaded.engine.llm.reset()


@needs_engine
def test_embedded_model_loads_on_llama_cpp_with_its_context(loaded):
    assert loaded.engine is not None and loaded.model is None
    assert loaded.context == loaded.engine.context >= 2048
    assert lce.q8_path().exists()
    assert loaded.engine.same_tokens(loaded.tokenizer, "退货 refund 12345 ？")


@needs_engine
def test_a_later_turn_reuses_the_cache_and_replies_as_from_scratch(loaded):
    first = _ids(loaded, CHAT)
    reply = list(loaded.engine.tokens(first, max_tokens=12, eos_ids=loaded.eos_ids))
    turn2 = CHAT + [{"role": "assistant", "content": loaded.tokenizer.decode(reply, skip_special_tokens=True)},
                    {"role": "user", "content": "那我可以退货吗？"}]
    ids = _ids(loaded, turn2)
    hits, reused = loaded.engine.hits, loaded.engine.reused_tokens
    cached = list(loaded.engine.tokens(ids, max_tokens=16, eos_ids=loaded.eos_ids))
    assert loaded.engine.hits == hits + 1
    assert loaded.engine.reused_tokens - reused >= len(first) - 2  # the whole first prompt was not re-read
    _fresh(loaded)
    scratch = list(loaded.engine.tokens(ids, max_tokens=16, eos_ids=loaded.eos_ids))
    assert cached == scratch and len(cached) > 0


@needs_engine
def test_the_same_prompt_twice_gives_the_same_greedy_reply(loaded):
    ids = _ids(loaded, CHAT)
    once = list(loaded.engine.tokens(ids, max_tokens=20, eos_ids=loaded.eos_ids))
    again = list(loaded.engine.tokens(ids, max_tokens=20, eos_ids=loaded.eos_ids))
    assert once == again


@needs_engine
def test_sampling_is_reproducible_by_seed(loaded):
    ids = _ids(loaded, CHAT)

    def run(seed: int) -> list[int]:
        return list(loaded.engine.tokens(ids, max_tokens=24, eos_ids=set(), temperature=1.5, seed=seed))

    assert run(7) == run(7)
    assert run(7) != run(8)


@needs_engine
def test_stop_hook_and_deadline_end_generation(loaded):
    ids = _ids(loaded, CHAT)
    calls = []

    def stop_on_third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    out = list(loaded.engine.tokens(ids, max_tokens=100, eos_ids=set(), should_stop=stop_on_third_call))
    assert 1 <= len(out) <= 3
    _fresh(loaded)  # the prompt must be prefilled again: a passed deadline stops before any token
    assert list(loaded.engine.tokens(ids, max_tokens=50, eos_ids=set(), deadline=time.monotonic() - 1)) == []


@needs_engine
def test_a_prompt_past_the_context_is_refused_with_numbers(loaded):
    too_long = [1] * (loaded.engine.context + 5)
    with pytest.raises(local_targets.LocalModelError, match=rf"{len(too_long)} tokens.*{loaded.engine.context}"):
        list(loaded.engine.tokens(too_long, max_tokens=4, eos_ids=set()))


@needs_engine
def test_chat_through_core_llm_streams_chinese_and_counts_tokens(loaded):
    from core import llm

    pieces, done = [], None
    _fresh(loaded)
    for item in llm.stream_chat(local_targets.EMBEDDED_MODEL, CHAT[1:], max_tokens=24, timeout=120):
        if isinstance(item, str):
            pieces.append(item)
        else:
            done = item
    assert done is not None and done.ok, done
    assert "".join(pieces).strip() == done.text and done.output_tokens > 0
    assert done.input_tokens == len(_ids(loaded, CHAT[1:]))
    assert loaded.engine.llm.n_tokens >= done.input_tokens  # llama.cpp, not a fallback, generated it


@needs_engine
def test_engines_are_cached_apart(loaded, monkeypatch):
    monkeypatch.setenv(lce.ENGINE_VAR, "transformers")
    other = local_provider.load(local_targets.EMBEDDED_MODEL)
    assert other is not loaded and other.engine is None and other.model is not None
    monkeypatch.setenv(lce.ENGINE_VAR, "llama_cpp")
    assert local_provider.load(local_targets.EMBEDDED_MODEL) is loaded


def test_requantising_reports_a_failure_and_leaves_no_partial_file(monkeypatch, tmp_path):
    if not lce.installed():
        pytest.skip("llama-cpp-python not installed")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF not really")
    target = tmp_path / "out.gguf"
    with pytest.raises(local_targets.LocalModelError, match="could not requantise"):
        lce._requantise(broken, target)
    assert not target.exists() and list(tmp_path.iterdir()) == [broken]


def test_the_engine_line_says_which_and_why(monkeypatch):
    monkeypatch.setattr(lce, "installed", lambda: False)
    monkeypatch.delenv(lce.ENGINE_VAR, raising=False)
    assert lce.describe() == "transformers (llama-cpp-python is not installed; ./setup.sh --llama-cpp adds it)"
    monkeypatch.setattr(lce, "installed", lambda: True)
    monkeypatch.setattr(lce, "gguf_path", lambda: Path("/x.gguf"))
    assert lce.describe().startswith("llama_cpp (") and lce.Q8_FILE in lce.describe()
    monkeypatch.setenv(lce.ENGINE_VAR, "transformers")
    assert lce.describe() == "transformers (CSFORGE_LOCAL_ENGINE=transformers)"


def test_auto_falls_back_to_transformers_when_llama_cpp_cannot_load(monkeypatch, tmp_path):
    from tests.helpers_llm import tiny_model_dir

    monkeypatch.setattr(local_provider.llama_cpp_engine, "chosen_for", lambda base, adapter: "llama_cpp")

    def broken(*args, **kwargs):
        raise RuntimeError("libllama.so: cannot open shared object file")

    monkeypatch.setattr(local_provider, "_load_llama_cpp", broken)
    monkeypatch.delenv(lce.ENGINE_VAR, raising=False)
    local_provider.clear_cache()
    fallback = local_provider.load(str(tiny_model_dir()))
    assert fallback.engine is None and fallback.model is not None
    local_provider.clear_cache()
    monkeypatch.setenv(lce.ENGINE_VAR, "llama_cpp")
    with pytest.raises(local_targets.LocalModelError, match="llama.cpp engine: libllama.so"):
        local_provider.load(str(tiny_model_dir()))
    local_provider.clear_cache()


def test_an_adapter_that_cannot_be_merged_stays_on_transformers(monkeypatch, tmp_path):
    monkeypatch.setattr(lce, "installed", lambda: False)
    monkeypatch.setenv(lce.ENGINE_VAR, "llama_cpp")
    assert lce.chosen_for(local_targets.embedded_folder(), tmp_path / "adapter") == "transformers"


def test_the_q8_copy_is_made_again_when_the_shipped_gguf_changes(monkeypatch, tmp_path):
    shipped = tmp_path / "shipped.gguf"
    shipped.write_bytes(b"v1")
    made = []

    def fake_requantise(source, target):
        made.append(source.read_bytes())
        target.write_bytes(b"q8 of " + source.read_bytes())

    monkeypatch.setattr(lce, "gguf_path", lambda: shipped)
    monkeypatch.setattr(lce, "_requantise", fake_requantise)
    assert lce.ensure_q8().read_bytes() == b"q8 of v1"
    lce.ensure_q8()
    assert made == [b"v1"]  # made once
    shipped.write_bytes(b"v2, a new wheel")
    assert lce.ensure_q8().read_bytes() == b"q8 of v2, a new wheel" and made == [b"v1", b"v2, a new wheel"]


def _adapter_config(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "bias": "none", "use_dora": False,
           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None, **changes}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def test_which_adapters_can_be_merged_into_a_gguf(tmp_path):
    from core import gguf_merge

    assert gguf_merge.mergeable(_adapter_config(tmp_path / "plain")) is None
    assert "use_dora" in gguf_merge.mergeable(_adapter_config(tmp_path / "dora", use_dora=True))
    assert "modules_to_save" in gguf_merge.mergeable(_adapter_config(tmp_path / "head", modules_to_save=["lm_head"]))
    assert "rank_pattern" in gguf_merge.mergeable(_adapter_config(tmp_path / "ranks", rank_pattern={"q_proj": 4}))
    assert "target_modules" in gguf_merge.mergeable(_adapter_config(tmp_path / "emb", target_modules=["embed_tokens"]))
    assert "IA3" in gguf_merge.mergeable(_adapter_config(tmp_path / "ia3", peft_type="IA3"))
    assert "init_lora_weights" in gguf_merge.mergeable(_adapter_config(tmp_path / "pissa", init_lora_weights="pissa"))
    assert "kasa_config" in gguf_merge.mergeable(_adapter_config(tmp_path / "kasa", kasa_config={"r": 1}))


def test_a_weight_outside_the_lora_pairs_stops_the_merge_and_bf16_adapters_load(tmp_path):
    import torch
    from safetensors.torch import save_file

    from core import gguf_merge

    folder = _adapter_config(tmp_path / "adapter")
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    pair = {key.format("A"): torch.ones(2, 576, dtype=torch.bfloat16), key.format("B"): torch.ones(576, 2)}
    save_file(pair, str(folder / "adapter_model.safetensors"))
    pairs, scale = gguf_merge.lora_pairs(folder)
    assert list(pairs) == ["blk.0.attn_q.weight"] and scale == 2.0 and pairs["blk.0.attn_q.weight"][0].dtype.name == "float32"
    save_file({**pair, "base_model.model.model.embed_tokens.weight": torch.zeros(4, 576)},
              str(folder / "adapter_model.safetensors"))
    with pytest.raises(gguf_merge.MergeError, match="embed_tokens.weight is not part of a LoRA pair"):
        gguf_merge.lora_pairs(folder)


@pytest.fixture
def random_adapter(loaded, engine_home):
    """A LoRA adapter with non-zero B on the embedded model, saved like a Factory job's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = engine_home / "random-adapter"
    if not (folder / "adapter_model.safetensors").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(local_targets.ensure_embedded())
        peft = get_peft_model(model, LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"))
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.5)
        peft.save_pretrained(folder)
    return folder


@needs_engine
def test_a_lora_finetune_runs_on_llama_cpp_as_the_merged_model(loaded, random_adapter, monkeypatch):
    """The merged GGUF's next-token logits follow transformers' merged fp32 model, not the base model's.

    (Greedy tokens are not compared: Q8_0 rounding flips near-ties, e.g. 31.02 vs 31.01, within a few tokens.)
    """
    import numpy as np
    import torch
    from llama_cpp import Llama

    tuned = local_provider.load(str(random_adapter))
    assert tuned.engine is not None and tuned is not loaded
    merged = Path(tuned.engine.llm.model_path)
    assert merged.parent.name == "merged" and merged.with_name(merged.name + ".source").exists()
    ids = _ids(tuned, CHAT)
    assert len(list(tuned.engine.tokens(ids, max_tokens=8, eos_ids=set()))) == 8

    monkeypatch.setenv(lce.ENGINE_VAR, "transformers")
    reference = local_provider.load(str(random_adapter))
    with torch.inference_mode():
        want = reference.model(torch.tensor([ids])).logits[0, -1].float().numpy()

    def last_logits(path: Path) -> np.ndarray:
        llm = Llama(model_path=str(path), n_ctx=1024, n_threads=1, logits_all=True, verbose=False)
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])

    corr = lambda got: float(np.corrcoef(want, got)[0, 1])  # noqa: E731
    merged_corr, base_corr = corr(last_logits(merged)), corr(last_logits(lce.q8_path()))
    assert merged_corr > 0.99 and merged_corr > base_corr + 0.01, (merged_corr, base_corr)


def test_only_the_newest_merged_copies_are_kept(tmp_path):
    import os

    folder = tmp_path / "merged"
    folder.mkdir()
    for i in range(6):
        copy = folder / f"{i}.q8_0.gguf"
        copy.write_bytes(b"gguf")
        (folder / f"{i}.q8_0.gguf.source").write_text("stamp")
        os.utime(copy, (1_000_000 + i, 1_000_000 + i))
    stale = folder / "9.q8_0.gguf.tmp123"
    stale.write_bytes(b"half")
    os.utime(stale, (1_000_000, 1_000_000))
    lce._evict_merged(folder, keep=folder / "0.q8_0.gguf")  # the one just made is kept, whatever its age
    left = sorted(f.name for f in folder.glob("*.q8_0.gguf"))
    assert left == ["0.q8_0.gguf", "3.q8_0.gguf", "4.q8_0.gguf", "5.q8_0.gguf"]
    assert not (folder / "1.q8_0.gguf.source").exists() and not stale.exists()
