"""The LoRA backend's Trainer: loss only where it is trained, a data order that survives resume.

`trainer_class()` returns a transformers Trainer subclass that
  - runs the LM head and cross-entropy only at the positions that carry loss (trained
    agent tokens), not over the 49k-word vocabulary at every position: the logits of a
    4 x 1024 batch of SmolLM2 alone are 0.8 GB in fp32, more with their gradient; and in
    chunks of CE_CHUNK positions whose logits are recomputed in backward, not kept;
  - draws each epoch's length-grouped order from its own generator seeded by
    (seed, epoch), so a run resumed after kill -9 sees the batches the uninterrupted run
    saw (the stock sampler draws from the global RNG, which the checkpoint's RNG state
    has moved on by then).
Also: `peak_rss_mb()` for the report and `context_overflow()` for the max_seq_len warning.
"""
from __future__ import annotations

import resource
import sys
from typing import Any

CE_CHUNK = 1024  # trained positions per LM-head chunk: 1024 x 49k vocabulary = 0.2 GB of fp32 logits


def trained_positions_loss(model: Any, inputs: dict, num_items: Any = None) -> Any:
    """Mean next-token cross-entropy over positions whose label is not -100.

    Same value as the model's own loss (shifted labels, ignore -100; divided by
    `num_items` when the Trainer counts items across gradient accumulation).
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    hidden = base.get_decoder()(input_ids=inputs["input_ids"],
                                attention_mask=inputs.get("attention_mask")).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    states, wanted = hidden[:, :-1][keep], target[keep]
    head = base.get_output_embeddings()
    loss = hidden.new_zeros((), dtype=torch.float32)
    for lo in range(0, states.shape[0], CE_CHUNK):
        part = states[lo:lo + CE_CHUNK], wanted[lo:lo + CE_CHUNK]
        if torch.is_grad_enabled():  # recompute the chunk's logits in backward instead of keeping them
            loss = loss + checkpoint(_chunk_loss, head, *part, use_reentrant=False)
        else:
            loss = loss + _chunk_loss(head, *part)
    return loss / (num_items if num_items is not None else keep.sum().clamp(min=1))


def _chunk_loss(head: Any, states: Any, wanted: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(head(states).float(), wanted, reduction="sum")


def trainer_class() -> type:
    """Trainer with the trained-positions loss and a resumable, seeded length-grouped order."""
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class SeededLengthSampler(LengthGroupedSampler):
        """Length-grouped batches whose order depends only on (seed, epoch)."""

        def __init__(self, *args: Any, seed: int, **kwargs: Any):
            super().__init__(*args, generator=torch.Generator().manual_seed(seed), **kwargs)
            self.seed = seed

        def set_epoch(self, epoch: int) -> None:
            self.generator.manual_seed(self.seed * 1_000_003 + int(epoch))

    class LoraTrainer(Trainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if self.args.train_sampling_strategy != "group_by_length":
                return super()._get_train_sampler(train_dataset)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            sampler = SeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                          dataset=dataset, model_input_name="input_ids", seed=seed)
            sampler.set_epoch(0)
            return sampler

        def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            loss = trained_positions_loss(self.accelerator.unwrap_model(model), inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does
            return (loss, {"loss": loss}) if return_outputs else loss

    return LoraTrainer


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def context_overflow(examples: list, tokenizer: Any, max_len: int) -> dict | None:
    """How often the prompt before the first trained reply (context message included) fills max_len.

    None when it never does; else counts and token figures for a warning with numbers.
    """
    from core.training import render

    sizes = []
    for e in examples:
        first = next((i for i, (m, w) in enumerate(zip(e.messages, e.weights))
                      if m["role"] == "assistant" and w > 0), None)
        if first is None:
            continue
        text = render(tokenizer, e.messages[:first], generation_prompt=True)
        sizes.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    over = sorted(s for s in sizes if s >= max_len)
    if not over:
        return None
    ordered = sorted(sizes)
    return {"conversations": len(sizes), "no_room": len(over), "max_seq_len": max_len,
            "median_prompt_tokens": ordered[len(ordered) // 2], "largest_prompt_tokens": ordered[-1]}


def overflow_message(info: dict) -> str:
    return (f"max_seq_len={info['max_seq_len']}: in {info['no_room']} of {info['conversations']} conversations "
            f"the messages before the first trained reply (context message included) fill the window "
            f"(median {info['median_prompt_tokens']} tokens, largest {info['largest_prompt_tokens']}); "
            f"those teach nothing. Raise max_seq_len or set include_context=false.")
