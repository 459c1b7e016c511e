"""Training report: Markdown with its figures beside it (data used vs whole, loss curves).

Written by `core.factory.run` into $CSFORGE_HOME/factory/<name>/report.md with data.png and
loss.png; the Factory page shows it. `details()` gathers what the registry keeps too:
library versions, hardware, wall time and the estimated cost.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

# USD per hour of the hardware a LoRA job ran on, when the job config gives none: a 2-vCPU
# cloud VM is about $0.10/h, one H100 about $2.50/h on-demand (2025 list prices); an Apple
# laptop is already paid for.
HOURLY_USD = {"cpu": 0.10, "cuda": 2.50, "mps": 0.0}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in ("torch", "transformers", "peft", "accelerate"):
        module = sys.modules.get(lib)
        if module is None:
            try:
                from importlib.metadata import version
                out[lib] = version(lib)
            except Exception:
                out[lib] = None
        else:
            out[lib] = getattr(module, "__version__", None)
    return out


def hardware(device: str | None) -> dict:
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "device": device or "cpu"}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def details(config: Any, examples: Any, outcome: Any, wall_s: float) -> dict:
    device = outcome.hyperparameters.get("device") if config.method == "lora" else None
    if config.method == "lora":
        rate = config.cost_per_hour_usd if config.cost_per_hour_usd is not None else HOURLY_USD.get(device or "cpu", 0.0)
        cost = (outcome.metrics.get("train_wall_s") or wall_s) / 3600 * rate
        basis = f"{rate:g} USD/h × training wall time"
    elif config.method == "remote":
        cost = outcome.metrics.get("estimated_cost_usd")
        basis = f"trained tokens × {outcome.metrics.get('train_price_per_1m')} USD per 1M"
    else:
        cost, basis = 0.0, "no training; the cost is the extra prompt tokens on every call"
    return {"versions": versions(), "hardware": hardware(device), "wall_s": round(wall_s, 2),
            "estimated_cost_usd": cost, "cost_basis": basis}


# ---------------------------------------------------------------- figures

def data_figure(examples: Any, path: Path) -> None:
    """Used vs whole dataset: length, tokens, label (with the threshold), share needing a human."""
    plt = _pyplot()
    whole = examples.whole
    used = [r for r in whole if r["used"]]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, key, title in ((axes[0], "turns", "messages per conversation"),
                           (axes[1], "tokens", "tokens per conversation (approx.)"),
                           (axes[2], "label", "quality label")):
        values = [r[key] for r in whole]
        bins = 20 if key == "label" else 25
        ax.hist(values, bins=bins, color="#bbbbbb", label=f"whole ({len(whole)})")
        ax.hist([r[key] for r in used], bins=bins, range=(min(values), max(values)) if values else None,
                color="#1f77b4", alpha=0.8, label=f"used ({len(used)})")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    axes[2].axvline(examples.threshold, color="#c62828", linestyle="--")
    share = [sum(r["needs_human"] for r in rows) / len(rows) if rows else 0 for rows in (whole, used)]
    axes[3].bar(["whole", "used"], share, color=["#bbbbbb", "#1f77b4"])
    axes[3].set_title("share with a human intervention", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def loss_figure(curves: dict, path: Path) -> bool:
    if not curves.get("train") and not curves.get("val"):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for key, style in (("train", "-"), ("val", "o-")):
        points = curves.get(key) or []
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=f"{key} loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- markdown

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "–" if value is None else str(value)


def write(out_dir: Path, config: Any, examples: Any, outcome: Any, info: dict) -> Path:
    """report.md + data.png + loss.png in out_dir; returns the report path."""
    counts = examples.counts()
    data_figure(examples, out_dir / "data.png")
    has_loss = loss_figure(outcome.curves, out_dir / "loss.png")
    m = outcome.metrics
    ds = examples.dataset
    lines = [
        f"# Training report: {config.name}", "",
        "| | |", "|---|---|",
        f"| method | {config.method} |", f"| base model | {config.base_model} |",
        f"| customer | {config.customer} |",
        f"| dataset | {ds.get('key')} ({ds.get('conversations')} conversations; sha256 {ds.get('sha256', '')[:16]}… of {ds.get('hash_of')}) |",
        f"| access point | `{outcome.access_point}` |",
        f"| seed | {config.seed} |", "",
        "## Data used", "",
        "| | kept | dropped | total |", "|---|---|---|---|",
    ]
    for key in ("conversations", "turns", "tokens"):
        c = counts[key]
        lines.append(f"| {key} | {c['kept']} | {c['dropped']} | {c['total']} |")
    lines += ["", f"Agent turns trained: {counts['agent_turns']['trained']}; kept as context only (loss weight 0): "
              f"{counts['agent_turns']['context_only']}. Split by conversation (seed {config.seed}): "
              f"{counts['split']['train']} train, {counts['split']['val']} validation.", "",
              f"Filter: keep label > {examples.threshold:g}; intervention handling: **{config.intervention}**"
              + (f" (handoff message: “{examples.settings['handoff_message']}”)" if examples.settings.get("handoff_message") else ""),
              "", "Dropped conversations, by reason:", ""]
    lines += [f"- {reason}: {n}" for reason, n in counts["dropped_reasons"].items()] or ["- none"]
    lines += ["", "Agent turns with loss weight 0, by reason:", ""]
    lines += [f"- {reason}: {n}" for reason, n in counts["zero_weight_reasons"].items()] or ["- none"]
    lines += ["", "Used data vs the whole dataset (tokens are the model-independent estimate):", "",
              "![data used vs whole](data.png)", "",
              f"## Epochs: {outcome.epochs.get('value')}", "", f"Why: {outcome.epochs.get('reason')}", ""]
    if config.method != "prompt":
        lines += ["## Loss", "", f"Validation loss before: {_fmt(m.get('val_loss_before'))}; after: "
                  f"{_fmt(m.get('val_loss_after'))}; final training loss: {_fmt(m.get('train_loss'))}.", ""]
        lines += ["![loss curves](loss.png)", ""] if has_loss else ["(no loss points reported)", ""]
    else:
        lines += ["## Prompt", "",
                  f"Extra prompt tokens per call: **{m.get('extra_prompt_tokens_per_call')}** ({m.get('token_counter')}): "
                  "the policy, instructions and few-shot examples are sent with every message — cheap to build, "
                  "dearer to run than a fine-tune that learned them.", "",
                  f"Few-shot examples (top-labelled conversations): {', '.join(m.get('few_shot_ids') or [])} "
                  f"(labels {', '.join(f'{x:g}' for x in m.get('few_shot_labels') or [])}).", "",
                  "Template: [prompt_template.md](prompt_template.md); as sent: [prompt_rendered.md](prompt_rendered.md).", ""]
    lines += ["## Hyperparameters", "", "```yaml",
              yaml.safe_dump(outcome.hyperparameters, allow_unicode=True, sort_keys=False).strip(), "```", "",
              "## Run", "", "| | |", "|---|---|",
              f"| wall time | {info['wall_s']:.1f} s |",
              f"| training wall time | {_fmt(m.get('train_wall_s'))} s |",
              f"| hardware | {_hardware_line(info['hardware'])} |",
              f"| tokens/s (non-padding, training) | {_fmt(m.get('tokens_per_s'))} |",
              f"| training tokens | {_fmt(m.get('train_tokens') or m.get('trained_tokens'))} |",
              *([f"| peak memory (RSS) | {m['peak_rss_mb']:.0f} MB |",
                 f"| torch threads | {m.get('torch_threads')} |"] if m.get("peak_rss_mb") else []),
              *([f"| warning | {m['context_warning']} |"] if m.get("context_warning") else []),
              f"| estimated cost | {_cost(info)} |",
              f"| versions | {', '.join(f'{k} {v}' for k, v in info['versions'].items())} |", "",
              "## Reproduce", "", "```", f"python -m core.factory train --config {out_dir / 'job.yaml'}", "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _hardware_line(hw: dict) -> str:
    gpu = f", {hw['gpu_count']}× {hw['gpu']}" if hw.get("gpu") else ""
    return f"{hw['device']}: {hw['cpu']} ({hw['cpu_count']} cores){gpu}"


def _cost(info: dict) -> str:
    cost = info.get("estimated_cost_usd")
    return f"{'unknown' if cost is None else f'${cost:.4f}'} ({info['cost_basis']})"
