"""LoRA training memory and speed: the old recipe vs ours, same model, same data, same steps.

    .venv/bin/python bench/train_bench.py                                  # embedded model, 4 x 1024, 2 steps
    .venv/bin/python bench/train_bench.py --steps 3 --busy 2               # under a synthetic 2-process load
    .venv/bin/python bench/train_bench.py --model tiny --steps 4           # seconds, for a smoke run

Each variant runs in its own child process (peak RSS is per process), old then ours, on
shop_zh training conversations with their context message (core.training), LoRA r=8 on
every linear layer, batch 4, max_seq_len 1024, length-grouped batches:
  old   the Factory before: stock Trainer loss (logits over the whole vocabulary at every
        position), LoRA dropout 0.05, torch's default threads (every core) and OpenMP's
        default wait policy (its threads spin before they sleep; ours sleep at once);
  ours  core.lora_trainer: LM head + loss only at trained positions, dropout off on CPU,
        gradient checkpointing for steps of >= 2048 tokens (the backend's CPU rule),
        threads from core.threads (CSFORGE_TORCH_THREADS or the free cores).
Printed: non-padding tokens/s, peak RSS, and ours/old ratios, with the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def items(tokenizer, max_len: int) -> list[dict]:
    from core import training
    from core.dataset import get_customer, load_dataset

    customer = get_customer("shop_zh")
    examples = training.build_examples(load_dataset("shop_zh/demo"), threshold=customer.threshold,
                                       intervention="teach_handoff", handoff_message=customer.handoff_message,
                                       seed=0, include_context=True)
    return training.tokenize_all(examples.train, tokenizer, max_len)[0]


def child(variant: str, args: argparse.Namespace) -> dict:
    """Train args.steps LoRA steps with one variant; figures as a dict."""
    import tempfile

    if variant == "ours":
        from core import threads

        threads.configure()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from core import lora_trainer
    from core.backends import resolve_base
    from core.training import Collator

    if args.model == "tiny":
        from tests.helpers_llm import tiny_model_dir

        folder = tiny_model_dir()
    else:
        folder = resolve_base(args.model)
    tok = AutoTokenizer.from_pretrained(folder)
    data = items(tok, args.max_seq_len)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05 if variant == "old" else 0.0, target_modules="all-linear",
        task_type="CAUSAL_LM"))
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=args.steps, per_device_train_batch_size=4,
                              learning_rate=2e-4, logging_steps=1, save_strategy="no", eval_strategy="no",
                              report_to="none", use_cpu=True, disable_tqdm=True, seed=0, data_seed=0,
                              train_sampling_strategy="group_by_length", remove_unused_columns=False,
                              include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
                              gradient_checkpointing=variant == "ours" and 4 * args.max_seq_len >= 2048,
                              gradient_checkpointing_kwargs={"use_reentrant": False})
    cls = Trainer if variant == "old" else lora_trainer.trainer_class()
    trainer = cls(model=model, args=targs, train_dataset=data, data_collator=Collator(tok.pad_token_id))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"variant": variant, "tokens": int(trainer.state.num_input_tokens_seen), "wall_s": wall,
            "tokens_per_s": trainer.state.num_input_tokens_seen / wall, "threads": torch.get_num_threads(),
            "peak_rss_mb": lora_trainer.peak_rss_mb(), "first_loss": losses[0] if losses else None}


def busy(n: int) -> list[subprocess.Popen]:
    """n processes spinning on a core each: the synthetic load of the issue's measurement."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="registry name / folder, or 'tiny'")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--busy", type=int, default=0, help="spinning processes to run alongside (synthetic load)")
    ap.add_argument("--only", choices=["old", "ours"], help="run one variant (the other's figures: a past run)")
    ap.add_argument("--child", choices=["old", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    spinners = busy(args.busy)
    try:
        time.sleep(2 if spinners else 0)
        print(f"load average {os.getloadavg()[0]:.1f} (+{args.busy} spinning processes); model {args.model}; "
              f"{args.steps} steps x batch 4 x <= {args.max_seq_len} tokens", flush=True)
        rows = {}
        for variant in [args.only] if args.only else ("old", "ours"):
            cmd = [sys.executable, __file__, "--child", variant, "--model", args.model, "--steps", str(args.steps),
                   "--max-seq-len", str(args.max_seq_len)]
            # "" is not a valid policy: libgomp falls back to its default, as before core set PASSIVE
            env = {**os.environ, "OMP_WAIT_POLICY": ""} if variant == "old" else None
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
            if out.returncode:
                print(f"{variant}: failed (exit {out.returncode}; -9 is the OOM killer)\n{out.stderr[-1500:]}")
                return 1
            rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[variant]
            print(f"{variant:5} {r['tokens_per_s']:8.1f} tokens/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                  f"{r['threads']} threads  ({r['tokens']} tokens in {r['wall_s']:.1f} s; first loss "
                  f"{r['first_loss']:.4f})  load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if args.only:
        return 0
    o, u = rows["old"], rows["ours"]
    print(f"ours/old: tokens/s {u['tokens_per_s'] / o['tokens_per_s']:.2f}x, "
          f"peak RSS {u['peak_rss_mb'] / o['peak_rss_mb']:.2f}x ({u['peak_rss_mb'] / 1024:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
