"""Training throughput: our LoRA pipeline vs a naive baseline, same model, same data, one process.

    .venv/bin/python bench/train_bench.py                          # SmolLM2 tokenizer, small model, ~2 min
    .venv/bin/python bench/train_bench.py --model smollm2-135m --steps 3   # the embedded model itself (slow on a CPU)
    .venv/bin/python bench/train_bench.py --model smollm2-135m --context --steps 8 --batch-size 8   # on a GPU

Both runs fine-tune the same LoRA adapter with transformers Trainer on the same shop_zh
training conversations (label filter, handoff handling and chat template from
core.training) for the same number of optimiser steps and batch size. They differ only in
how batches are made and what carries loss:
  ours   length-grouped batches padded to their own longest example; loss only on trained
         agent tokens (core.training.Collator + train_sampling_strategy="group_by_length");
  naive  random batches, every example padded to the longest in the data set; loss on every
         token, padding included.
Effective tokens/s = non-padding tokens trained on / training wall time. Target: ours >= 1.5x.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import training  # noqa: E402
from core.dataset import get_customer, load_dataset  # noqa: E402


class NaiveCollator:
    """Pad to the longest example of the whole data set; every position is a target."""

    def __init__(self, pad_id: int, longest: int):
        self.pad_id, self.longest = pad_id, longest

    def __call__(self, features):
        import torch

        ids = [f["input_ids"] + [self.pad_id] * (self.longest - len(f["input_ids"])) for f in features]
        mask = [[1] * len(f["input_ids"]) + [0] * (self.longest - len(f["input_ids"])) for f in features]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def small_model(folder: Path) -> Path:
    """SmolLM2's tokenizer (real token counts) on a 4-layer random Llama: the padding question, fast."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.backends import resolve_base

    tok = AutoTokenizer.from_pretrained(resolve_base("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def load_model(name: str, tmp: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "small":
        folder = small_model(tmp / "small")
    elif name == "tiny":
        from tests.helpers_llm import build_tiny_model

        folder = build_tiny_model(tmp / "tiny")
    else:
        from core.backends import resolve_base

        folder = resolve_base(name)
    return folder, AutoTokenizer.from_pretrained(folder), lambda: AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32)


def train(make_model, items, collator, sampling: str, args) -> tuple[float, int, int]:
    """(wall seconds, non-padding tokens, padded positions) for args.steps LoRA steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = get_peft_model(make_model(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))
    counted = {"real": 0, "positions": 0}

    def counting(features):
        batch = collator(features)
        counted["real"] += int(batch["attention_mask"].sum())
        counted["positions"] += batch["attention_mask"].numel()
        return batch

    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                              learning_rate=2e-4, logging_steps=10**6, save_strategy="no", eval_strategy="no",
                              report_to="none", use_cpu=True, disable_tqdm=True, seed=0, data_seed=0,
                              train_sampling_strategy=sampling, remove_unused_columns=False, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=items, data_collator=counting)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, counted["real"], counted["positions"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small",
                        help="'small' (SmolLM2 tokenizer, 4-layer random Llama; default), 'tiny', or a registry "
                             "name / folder such as smollm2-135m (about 40 s a step on 2 shared CPUs)")
    parser.add_argument("--dataset", default="shop_zh/demo")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--context", action="store_true",
                        help="put the agent's context in a system message (longer sequences; slow on a CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ds = load_dataset(args.dataset)
    customer = get_customer(args.dataset.split("/")[0])
    examples = training.build_examples(ds, threshold=customer.threshold, intervention="teach_handoff",
                                       handoff_message=customer.handoff_message, seed=0,
                                       include_context=args.context)
    with tempfile.TemporaryDirectory() as tmp:
        folder, tok, make_model = load_model(args.model, Path(tmp))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        items, _ = training.tokenize_all(examples.train, tok, args.max_seq_len)
        random.Random(0).shuffle(items)
        longest = max(len(i["input_ids"]) for i in items)
        lengths = sorted(len(i["input_ids"]) for i in items)
        print(f"model {folder}; {len(items)} training conversations; tokens per conversation "
              f"min {lengths[0]}, median {lengths[len(lengths) // 2]}, max {longest}; "
              f"{args.steps} steps × batch {args.batch_size}", flush=True)
        ours = train(make_model, items, training.Collator(tok.pad_token_id), "group_by_length", args)
        naive = train(make_model, items, NaiveCollator(tok.pad_token_id, longest), "random", args)
    rows = []
    for name, (wall, real, positions) in (("ours", ours), ("naive", naive)):
        rows.append((name, real / wall, real, positions, wall))
        print(f"{name:6} {real / wall:9.1f} effective tokens/s  ({real} real tokens in {positions} positions, "
              f"{real / positions:.0%} useful; {wall:.1f} s)")
    ratio = rows[0][1] / rows[1][1]
    print(f"ratio  {ratio:.2f}x  (target >= 1.5x) {'OK' if ratio >= 1.5 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
