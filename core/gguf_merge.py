"""A LoRA adapter merged into the embedded model's Q8_0 GGUF, so finetunes run on llama.cpp too.

    python -m core.gguf_merge ADAPTER_FOLDER OUT.gguf     # what the llama.cpp engine does on first use

For each linear layer the adapter trains, the merged weight is W + (B @ A) * alpha / r
(alpha / sqrt(r) with rsLoRA), requantised to Q8_0; every other tensor and all metadata
are copied. llama.cpp's converter stores q_proj and k_proj with their rows permuted for
its rotary layout, so their deltas get the same permutation. Checked on a random adapter:
greedy replies of the merged GGUF matched transformers' merged model for 24 of 24 tokens
(the base model's differed from token 4), logits correlating 0.998.

Only plain LoRA on Llama-style linear layers is merged (`mergeable` says why not otherwise:
DoRA and other LoRA variants, initialisations that rewrite the base weights such as PiSSA,
trained biases or tokens, modules_to_save, per-module ranks); those stay on transformers.
Any weight in the adapter file outside a lora_A/lora_B pair stops the merge.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}
_TARGETS = {name.rsplit(".", 1)[1] for name in GGUF_NAMES}


class MergeError(ValueError):
    """The adapter cannot be merged into a GGUF; the message says why."""


MERGE_VERSION = 1  # part of a merged file's stamp: a change here makes every merge again
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal")  # the others rewrite the base weights on load
_VARIANTS = ("use_dora", "lora_bias", "modules_to_save", "fan_in_fan_out", "layer_replication", "rank_pattern",
             "alpha_pattern", "kasa_config", "use_bdlora", "alora_invocation_tokens", "velora_config",
             "monteclora_config", "arrow_config", "trainable_token_indices", "target_parameters")


def mergeable(adapter: Path) -> str | None:
    """None when `adapter` is plain LoRA on the linear layers we can merge; else the reason."""
    try:
        cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"adapter_config.json unreadable: {exc}"
    if cfg.get("peft_type") != "LORA":
        return f"peft_type {cfg.get('peft_type')!r}, not LORA"
    if cfg.get("bias", "none") != "none":
        return f"bias={cfg.get('bias')!r}"
    for key in _VARIANTS:
        if cfg.get(key):
            return f"{key}={cfg.get(key)!r}"
    if cfg.get("init_lora_weights", True) not in _PLAIN_INITS:
        return f"init_lora_weights={cfg.get('init_lora_weights')!r}"
    targets = cfg.get("target_modules") or []
    if isinstance(targets, str) or not set(targets) <= _TARGETS:
        return f"target_modules {targets!r} outside {sorted(_TARGETS)}"
    if not (Path(adapter) / "adapter_model.safetensors").exists():
        return "no adapter_model.safetensors"
    return None


def lora_pairs(adapter: Path) -> tuple[dict[str, tuple[Any, Any]], float]:
    """(GGUF tensor name -> (A, B) float32 arrays, scale) of every adapted layer.

    Any other weight in the file (trained embeddings, token deltas, a lone lora_B) is an
    error: dropping it would merge a different model."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    r = cfg["r"]
    scale = cfg["lora_alpha"] / (r ** 0.5 if cfg.get("use_rslora") else r)
    weights = {k: v.float().numpy() for k, v in load_file(str(Path(adapter) / "adapter_model.safetensors")).items()}
    pairs = {}
    for key, a in weights.items():
        if ".lora_B." in key and key.replace(".lora_B.", ".lora_A.") in weights:
            continue
        b = weights.get(key.replace(".lora_A.", ".lora_B.")) if ".lora_A." in key else None
        if b is None:
            raise MergeError(f"{adapter}: weight {key} is not part of a LoRA pair")
        layer, module = _layer_and_module(key)
        if module not in GGUF_NAMES:
            raise MergeError(f"{adapter}: cannot place {key}")
        pairs[f"blk.{layer}.{GGUF_NAMES[module]}.weight"] = (a, b)
    if not pairs:
        raise MergeError(f"{adapter}: no LoRA weights found")
    return pairs, scale


def _layer_and_module(key: str) -> tuple[str, str]:
    """('3', 'self_attn.q_proj') from '...model.layers.3.self_attn.q_proj.lora_A.weight'."""
    if "layers." not in key:
        raise MergeError(f"not a decoder-layer weight: {key}")
    layer, rest = key.split("layers.", 1)[1].split(".", 1)
    return layer, rest.rsplit(".lora_A", 1)[0]


def _rotary_permute(w: Any, n_head: int) -> Any:
    """The row order llama.cpp's converter gives q/k projections (its LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def merge(base_gguf: Path, adapter: Path, target: Path) -> Path:
    """Write `target`: `base_gguf` with the adapter merged into its layers (Q8_0)."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize, quantize

    reason = mergeable(adapter)
    if reason:
        raise MergeError(f"{adapter}: {reason}")
    reader = gguf.GGUFReader(str(base_gguf))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise MergeError(f"{base_gguf.name}: architecture {arch!r}; only llama's q/k layout is known here")
    heads = {"attn_q": reader.fields[f"{arch}.attention.head_count"].contents(),
             "attn_k": reader.fields[f"{arch}.attention.head_count_kv"].contents()}
    pairs, scale = lora_pairs(adapter)
    writer = gguf.GGUFWriter(str(target), arch)
    try:
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue  # the writer adds these itself
            if field.name == "general.alignment":
                writer.data_alignment = int(field.contents())  # so tensor data is laid out as declared
            vtype = field.types[0]
            writer.add_key_value(field.name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
        for tensor in reader.tensors:
            pair = pairs.pop(tensor.name, None)
            if pair is None:
                writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape,
                                  raw_dtype=tensor.tensor_type)
                continue
            delta = (pair[1] @ pair[0]) * scale  # one layer's delta at a time: about 14 MB at most here
            kind = tensor.name.split(".")[2]
            if kind in heads:
                delta = _rotary_permute(delta, int(heads[kind]))
            weight = dequantize(tensor.data, tensor.tensor_type).reshape(delta.shape) + delta
            data = quantize(weight.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        if pairs:
            raise MergeError(f"{adapter}: layers not in {base_gguf.name}: {', '.join(sorted(pairs)[:3])}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__.splitlines()[2])
        sys.exit(2)
    from core import llama_cpp_engine

    print(merge(llama_cpp_engine.ensure_q8(), Path(sys.argv[1]), Path(sys.argv[2])))
