"""Training examples from a customer dataset: filter, handoff handling, curation, split, tokens.

Every backend consumes the same `Examples`: conversations whose label passes the threshold,
cut or taught at the human-intervention point, with a per-agent-turn loss weight (0 for a
turn a tester flagged in the sandbox or that the rules below mark bad), split into
train/validation by conversation with a seed.

Rules that give an agent turn loss weight 0 (the conversation still provides context):
  flagged    its exact text was flagged by a tester in the sandbox (tables flags +
             sandbox_messages; matched on the stripped reply text);
  repeat     empty, or word for word the previous agent turn (a "repeated reply" glitch in
             CS eval, and the filler that precedes tool calls in logs);
  customer   the customer's Dataset class may define `bad_turn(messages, i) -> reason | None`.
Intervention handling (the index is the first message where a human must take over):
  cut            keep the messages before it; an agent turn at or after it is dropped;
  teach_handoff  keep up to it (the user's message that triggers it) and end with the
                 client's handoff message as the agent's reply; if the trigger was an
                 agent turn (a leak), that turn is replaced by the handoff message.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.dataset import approx_tokens

CONTEXT_NOTE = "Context (what the agent knows about this conversation):\n"  # as core.llm adds it at inference


@dataclass
class Example:
    """One conversation ready for a chat template; `weights[i]` is the loss weight of message i."""

    id: str
    messages: list[dict]
    weights: list[float]
    label: float
    intervention: int
    context: dict = field(default_factory=dict)

    @property
    def agent_turns(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)

    @property
    def trained_turns(self) -> int:
        return sum(1 for m, w in zip(self.messages, self.weights) if m["role"] == "assistant" and w > 0)


@dataclass
class Examples:
    """What a backend trains on, plus the bookkeeping the report and the registry need."""

    train: list[Example]
    val: list[Example]
    dataset: dict                      # key, url, sha256, conversations
    threshold: float
    dropped: dict[str, int]            # reason -> conversations
    zero_weight: dict[str, int]        # reason -> agent turns kept as context only
    whole: list[dict]                  # one row per conversation: turns, tokens, label, needs_human, used
    settings: dict                     # filter and handoff settings, for the registry

    @property
    def kept(self) -> list[Example]:
        return self.train + self.val

    def counts(self) -> dict:
        """Conversations, turns, tokens: kept vs dropped (approximate tokens, model-independent)."""
        used = [r for r in self.whole if r["used"]]
        total_turns = sum(r["turns"] for r in self.whole)
        total_tokens = sum(r["tokens"] for r in self.whole)
        kept_turns = sum(len(e.messages) for e in self.kept)
        kept_tokens = sum(approx_tokens(m["content"]) for e in self.kept for m in e.messages
                          if m["role"] != "system")
        return {"conversations": {"kept": len(used), "dropped": len(self.whole) - len(used),
                                  "total": len(self.whole)},
                "turns": {"kept": kept_turns, "dropped": total_turns - kept_turns, "total": total_turns},
                "agent_turns": {"trained": sum(e.trained_turns for e in self.kept),
                                "context_only": sum(e.agent_turns - e.trained_turns for e in self.kept)},
                "tokens": {"kept": kept_tokens, "dropped": max(0, total_tokens - kept_tokens),
                           "total": total_tokens},
                "split": {"train": len(self.train), "val": len(self.val)},
                "dropped_reasons": dict(self.dropped), "zero_weight_reasons": dict(self.zero_weight)}


# ---------------------------------------------------------------- dataset -> examples

def dataset_sha256(paths: Iterable[Path]) -> str:
    """Content hash of the dataset files (what a rebuild must find again)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def flagged_replies() -> set[str]:
    """Agent replies testers flagged in the sandbox (stripped text)."""
    from core.store import db

    rows = db().execute("select m.content from flags f join sandbox_messages m on m.id = f.message_id "
                        "where m.role = 'assistant'").fetchall()
    return {(r[0] or "").strip() for r in rows if r[0]}


def build_examples(ds: Any, *, threshold: float, intervention: str, handoff_message: str,
                   flagged: set[str] | None = None, include_context: bool = True,
                   val_fraction: float = 0.1, seed: int = 0, max_conversations: int | None = None,
                   dataset_info: dict | None = None, tool_turns: bool = False) -> Examples:
    """Filter by label, apply the handoff mode and curation weights, split by conversation."""
    flagged = flagged or set()
    bad_turn = getattr(ds, "bad_turn", None)
    labels, interventions = ds.labels, ds.interventions
    kept: list[Example] = []
    dropped: dict[str, int] = {}
    zero: dict[str, int] = {}
    whole: list[dict] = []
    for i in range(len(ds)):
        sample = ds[i]
        row = {"id": sample.id, "turns": len(sample.dialog), "label": labels[i],
               "tokens": sum(approx_tokens(m.get("content") or "") for m in sample.dialog),
               "needs_human": interventions[i] >= 0, "used": False}
        whole.append(row)
        reason = None
        if labels[i] <= threshold:
            reason = f"label <= {threshold:g}"
        elif max_conversations is not None and len(kept) >= max_conversations:
            reason = "over max_conversations (quick-run cap)"
        if reason is None:
            example, reason = _example(sample, intervention, handoff_message, flagged, bad_turn,
                                       include_context, zero, tool_turns)
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        row["used"] = True
        kept.append(example)
    train, val = split(kept, val_fraction, seed)
    settings = {"min_label": threshold, "keep": f"label > {threshold:g}", "intervention": intervention,
                "handoff_message": handoff_message if intervention == "teach_handoff" else None,
                "flagged_replies": len(flagged), "include_context": include_context,
                "val_fraction": val_fraction, "max_conversations": max_conversations, "tool_turns": tool_turns}
    return Examples(train, val, dataset_info or {}, threshold, dropped, zero, whole, settings)


def _example(sample: Any, mode: str, handoff: str, flagged: set[str], bad_turn: Any,
             include_context: bool, zero: dict[str, int],
             tool_turns: bool = False) -> tuple[Example | None, str | None]:
    dialog = list(sample.dialog)
    idx = sample.human_intervention_idx
    taught = None
    if 0 <= idx < len(dialog):
        if mode == "cut":
            dialog = dialog[:idx]
        else:
            keep = idx + 1 if dialog[idx]["role"] == "user" else idx
            dialog = dialog[:keep] + [{"role": "assistant", "content": handoff}]
            taught = len(dialog) - 1
    if tool_turns:  # the agent learns to act: context tool calls become tool-call turns (core/tool_turns.py)
        from core.tool_turns import with_tool_turns

        dialog = with_tool_turns(dialog, (sample.context or {}).get("tools"))
        taught = len(dialog) - 1 if taught is not None else None  # the taught handoff stays last
    messages, weights = [], []
    previous_agent = None
    for n, m in enumerate(dialog):
        role, text = m["role"], (m.get("content") or "").strip()
        if tool_turns and (role == "tool" or m.get("tool_calls")):
            messages.append({**m, "content": m.get("content") or ""})
            weights.append(1.0 if role == "assistant" else 0.0)  # the call is trained, its result is context
            continue
        if role not in ("system", "user", "assistant") or (role == "assistant" and not text and m.get("tool_calls")):
            continue  # tool traffic reaches the model through the context, as at inference
        weight, why = 1.0, None
        if role == "assistant":
            if n != taught:
                if text in flagged:
                    why = "flagged in the sandbox"
                elif not text or text == previous_agent:
                    why = "empty or repeats the previous agent turn"
                elif bad_turn is not None:
                    why = bad_turn(dialog, n)
            previous_agent = text
        if why:
            weight = 0.0
            zero[why] = zero.get(why, 0) + 1
        messages.append({"role": role, "content": text})
        weights.append(weight if role == "assistant" else 0.0)
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
        weights.pop()
    if not any(weights):
        if not messages:
            return None, ("no agent turn before the human took over" if idx >= 0 else "no agent turn")
        return None, "every agent turn flagged or bad"
    context = sample.context or {}
    shown = {k: v for k, v in context.items() if k != "tools"} if tool_turns else context  # tools: in the turns
    if include_context and shown:
        note = {"role": "system", "content": CONTEXT_NOTE + format_context(shown)}
        if messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{note['content']}"}
        else:
            messages.insert(0, note)
            weights.insert(0, 0.0)
    return Example(sample.id, messages, weights, sample.label, idx, context), None


def format_context(context: dict) -> str:
    """The context as the model sees it at inference (core.llm.format_context when present)."""
    try:
        from core.llm import format_context as llm_format
        return llm_format(context)
    except ImportError:  # core.llm not there: same 'key: value' lines
        return "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                         for k, v in context.items())


def split(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded split by conversation: a conversation is wholly in train or wholly in validation."""
    if len(examples) < 2 or val_fraction <= 0:
        return list(examples), []
    order = sorted(examples, key=lambda e: e.id)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(len(order) * val_fraction)))
    return order[n_val:], order[:n_val]


# ---------------------------------------------------------------- tokens and the label mask

def tokenize(example: Example, tokenizer: Any, max_len: int) -> dict | None:
    """input_ids + labels with the model's chat template; labels are -100 except trained agent turns.

    The rendered text is cut at the boundaries of each trained agent turn (the end of the
    prompt with the generation header, the end of the turn with its end-of-turn token) and
    each piece is tokenised on its own, so a reply is tokenised as at inference, where the
    prompt is tokenised and the model continues it. None when no trained token fits max_len.
    """
    from core.tool_turns import for_tokenizer

    msgs = for_tokenizer(tokenizer, example.messages)  # the template's tool format, else core.llm's text one
    full = render(tokenizer, msgs)
    cuts, spans = [0], []
    for i, (m, w) in enumerate(zip(msgs, example.weights)):
        if m["role"] != "assistant" or w <= 0:
            continue
        prompt = render(tokenizer, msgs[:i], generation_prompt=True)
        upto = render(tokenizer, msgs[:i + 1])
        start, end = len(prompt), len(upto)
        prefix_ok = i > 0 and full.startswith(upto) and upto.startswith(prompt)
        if not prefix_ok or start < cuts[-1]:
            continue  # a template that is not prefix-stable here: the turn stays context only
        cuts += [start, end]
        spans.append(len(cuts) - 2)
    cuts.append(len(full))
    input_ids: list[int] = []
    labels: list[int] = []
    for k in range(len(cuts) - 1):
        piece = full[cuts[k]:cuts[k + 1]]
        if not piece:
            continue
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if k in spans else [-100] * len(ids)
    input_ids, labels = input_ids[:max_len], labels[:max_len]
    if all(t == -100 for t in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


def render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def tokenize_all(examples: list[Example], tokenizer: Any, max_len: int) -> tuple[list[dict], int]:
    """Tokenised examples and how many had no trained token left within max_len."""
    out, lost = [], 0
    for example in examples:
        item = tokenize(example, tokenizer, max_len)
        if item is None:
            lost += 1
        else:
            out.append(item)
    return out, lost


class Collator:
    """Pads a batch to its own longest example (length-grouped batches keep that short)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id, self.multiple = pad_id, pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        ids, labels, mask = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_id] * pad)
            labels.append(f["labels"] + [-100] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}


def chat_jsonl(examples: list[Example]) -> bytes:
    """OpenAI fine-tuning chat JSONL; an agent turn with loss weight 0 carries "weight": 0."""
    lines = []
    for e in examples:
        msgs = []
        for m, w in zip(e.messages, e.weights):
            item = dict(m)
            if m["role"] == "assistant":
                item["weight"] = 1 if w > 0 else 0
            msgs.append(item)
        lines.append(json.dumps({"messages": msgs}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")
