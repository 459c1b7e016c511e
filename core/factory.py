"""Model factory: [model] + [data] in, [tuned model with an access point] out.

    python -m core.factory train --customer shop_zh --method lora --epochs 3
    python -m core.factory train --config job.yaml --background        # prints the job id
    python -m core.factory train --customer shop_zh --method prompt
    python -m core.factory train --customer shop_zh --method remote --set remote.base_url=https://api.openai.com/v1 \\
        --set remote.provider_model=gpt-4.1-mini-2025-04-14 --set remote.access_prefix=openai
    python -m core.factory list | status <job> | cancel <job> | resume <job> [--background]
    accelerate launch -m core.factory train --config job.yaml --device cuda   # several GPUs

One loop for every job (`run`): training examples from the dataset (core.training) ->
a backend (core.backends: lora | prompt | remote) -> progress into the job row (core.jobs)
-> a registry entry and a training report (core.report) beside the adapter or prompt under
$CSFORGE_HOME/factory/<name>/. A job config is a typed model that rejects unknown fields;
every default says why it is that value, and the resolved config is saved with the result.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core import jobs
from core.paths import home_dir

KIND = "train"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(Strict):
    # Rank 8 / alpha 16 on every linear layer: the common LoRA recipe for small chat models;
    # enough capacity for a client's tone and procedures, under 1% of the weights.
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha (scale = alpha / r)")
    # None: off on a CPU (8% of a step and activation copies there), 0.05 on a GPU.
    dropout: float | None = Field(None, ge=0, lt=1, description="LoRA dropout; None: 0 on CPU, 0.05 on GPU")
    target_modules: str | list[str] = Field("all-linear", description="layers to adapt")
    # 2e-4 is the usual LoRA learning rate (10x full fine-tuning): adapters start at zero.
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    scheduler: str = Field("cosine", description="learning-rate schedule after warm-up")
    warmup_steps: int = Field(5, ge=0, description="a few warm-up steps keep the first updates of fresh adapters small")
    weight_decay: float = Field(0.0, ge=0, description="none: LoRA's low rank already regularises")
    # 4 conversations a step fit a 135M model on a laptop CPU; raise on a GPU.
    batch_size: int = Field(4, ge=1, description="conversations per device per step")
    grad_accum: int = Field(1, ge=1, description="steps accumulated per optimiser update")
    # 1024 tokens hold most support chats with their context; longer ones are truncated
    # (their later agent turns lose loss), counted in the report.
    max_seq_len: int = Field(1024, ge=16, description="tokens per conversation after the chat template")
    max_epochs: int = Field(10, ge=1, description="upper bound when epochs are chosen by validation loss")
    # Stop after 2 evaluations without improvement: one noisy evaluation does not stop a run.
    patience: int = Field(2, ge=1, description="evaluations without improvement before early stopping")
    max_steps: int = Field(-1, description="hard cap on optimiser steps (-1: none); for quick runs")
    eval_steps: int | None = Field(None, ge=1, description="evaluate and checkpoint every N steps (None: every epoch)")
    logging_steps: int = Field(1, ge=1, description="log training loss every N steps (cheap; curves need points)")
    # None: on when a CPU step holds >= 2048 tokens (4 x 1024 peaked at 11 GB without it,
    # attention and MLP activations of 30 layers); recomputing them costs about a third more time.
    gradient_checkpointing: bool | None = Field(None, description="trade compute for memory; None: on for big CPU batches")
    # The loss before training is the report's baseline; on a big validation set it costs minutes.
    eval_before: bool = Field(True, description="measure validation loss before training")


class PromptSettings(Strict):
    # 3 examples show the tone without crowding the context of a small model.
    few_shot: int = Field(3, ge=0, description="example conversations in the prompt (best-labelled first)")
    # Each example costs prompt tokens on every call; 600 characters keep one example short.
    max_example_chars: int = Field(600, ge=50, description="characters per example before it is cut")
    template: str | None = Field(None, description="template with {policy} {examples} {context} {history} {question}; None: the default")


class RemoteSettings(Strict):
    base_url: str | None = Field(None, description="OpenAI-compatible API base, e.g. https://api.openai.com/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key (never stored)")
    provider_model: str | None = Field(None, description="the provider's base model id (default: base_model)")
    access_prefix: str | None = Field(None, description="LiteLLM prefix for the tuned model (openai, nebius, together_ai); None: URL#model")
    learning_rate_multiplier: float | None = Field(None, description="None: the provider's default")
    batch_size: int | None = Field(None, description="None: the provider's default")
    # Providers update a job every few seconds to minutes; 10 s keeps the page live without hammering them.
    poll_interval_s: float = Field(10.0, gt=0, description="seconds between status polls")
    timeout_s: float = Field(6 * 3600, gt=0, description="give up on a provider job after this long")
    request_timeout_s: float = Field(60.0, gt=0, description="timeout of one HTTP request")
    train_price_per_1m: float | None = Field(None, description="USD per 1M training tokens; None: core/prices/finetune.yaml")


class JobConfig(Strict):
    customer: str = Field(description="customer folder name, e.g. shop_zh")
    dataset: str | None = Field(None, description="dataset name of the customer; None: the customer's first dataset")
    data_url: str | None = Field(None, description="data service URL (python -m core.api); None: read in-process")
    method: Literal["lora", "prompt", "remote"] = Field("lora", description="backend")
    # The embedded model: works with no key, no network and no GPU.
    base_model: str = Field("smollm2-135m", description="registry name, local folder or provider model")
    name: str | None = Field(None, description="registry name of the result (default: customer-method-time)")
    seed: int = Field(0, description="one seed for the split, the sampler and the adapter init")
    # None: epochs are chosen by validation loss (early stopping with patience).
    epochs: int | None = Field(None, ge=1, description="fixed number of epochs; None: early stopping")
    # None: the customer's own threshold, the line its data owner drew between good and bad.
    min_label: float | None = Field(None, ge=0, le=1, description="keep conversations with label above this")
    # Teaching the handoff keeps the hard cases and teaches the right move; "cut" drops them to context.
    intervention: Literal["cut", "teach_handoff"] = Field("teach_handoff", description="at the human-intervention point")
    use_flags: bool = Field(True, description="agent turns flagged in the sandbox get loss weight 0")
    include_context: bool = Field(True, description="put what the agent knew (tools, profile) in a system message, as at inference")
    # 10% by conversation: enough to see overfitting on a few hundred chats.
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of conversations held out for validation")
    max_conversations: int | None = Field(None, ge=1, description="cap on kept conversations (quick runs)")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto: GPU when there is one")
    # A 2-vCPU cloud VM costs about $0.10/h, a single H100 about $2.50/h: the report's cost estimate.
    cost_per_hour_usd: float | None = Field(None, ge=0, description="hardware price for the cost estimate; None: by device")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="lora backend settings")
    prompt: PromptSettings = Field(default_factory=PromptSettings, description="prompt backend settings")
    remote: RemoteSettings = Field(default_factory=RemoteSettings, description="remote backend settings")


def load_config(path: str | Path, **overrides: Any) -> JobConfig:
    """A job config from YAML; unknown fields fail here with the file and field named."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    try:
        return make_config({**raw, **overrides})
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None


def make_config(values: dict) -> JobConfig:
    """Validate, fill the default name, return the resolved config."""
    config = JobConfig.model_validate(values)
    if not config.name:
        config.name = f"{config.customer}-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return config


# ---------------------------------------------------------------- the loop

class Progress:
    """Merges fields into the job's progress JSON (no-op on non-main ranks of a distributed run)."""

    def __init__(self, job_id: str | None, start: dict | None = None):
        self.job_id, self.data = job_id, dict(start or {})

    def __call__(self, **fields: Any) -> None:
        # A new stage before the results exist is a safe place to stop (data loading, tokenising,
        # the first validation pass can take minutes on a CPU; the trainer checks between steps).
        if "stage" in fields and fields["stage"] not in ("writing report", "done") and stop_requested(self.job_id):
            raise JobCancelled(f"cancelled before stage '{fields['stage']}'")
        self.data.update(fields)
        if self.job_id:
            jobs.update(self.job_id, progress=self.data)


CANCEL = threading.Event()


class JobCancelled(Exception):
    """Raised between stages when a cancel was asked for."""


def stop_requested(job_id: str | None) -> bool:
    """A SIGTERM arrived, or the job row says 'cancelling' (the flag works even if the signal is lost)."""
    return CANCEL.is_set() or jobs.stop_flag(job_id)


def open_dataset(config: JobConfig) -> tuple[Any, dict]:
    """The dataset (in-process or over HTTP) and its identity for the registry."""
    from core import training
    from core.dataset import dataset_spec, default_dataset, load_dataset

    key = f"{config.customer}/{config.dataset or default_dataset(config.customer)}"
    if config.data_url:
        from core.remote import RemoteDataset

        ds = RemoteDataset(config.data_url, key)
        digest = _samples_sha256(ds)
        return ds, {"key": key, "url": config.data_url, "sha256": digest, "conversations": len(ds),
                    "hash_of": "served samples (id, dialog, label, intervention)"}
    spec = dataset_spec(key)
    ds = load_dataset(key)
    return ds, {"key": key, "path": str(spec.path), "sha256": training.dataset_sha256([spec.path]),
                "conversations": len(ds), "hash_of": "file bytes"}


def _samples_sha256(ds: Any) -> str:
    import hashlib

    digest = hashlib.sha256()
    for s in ds:
        digest.update(json.dumps([s.id, s.dialog, s.label, s.human_intervention_idx],
                                 ensure_ascii=False, sort_keys=True).encode())
    return digest.hexdigest()


def run(config: JobConfig, job_id: str | None, *, resume: bool = False) -> dict:
    """Examples -> backend -> registry entry + report. Returns the job result."""
    from core import report, training
    from core.backends import BACKENDS, Context
    from core.dataset import get_customer

    started = time.time()
    main_rank = int(os.environ.get("RANK", "0")) == 0
    previous = jobs.get(job_id, check_alive=False).progress if main_rank and job_id and resume else {}
    progress = Progress(job_id if main_rank else None, {**previous, "stage": "loading data"})
    progress()
    customer = get_customer(config.customer)
    ds, info = open_dataset(config)
    threshold = config.min_label if config.min_label is not None else customer.threshold
    examples = training.build_examples(
        ds, threshold=threshold, intervention=config.intervention,
        handoff_message=customer.handoff_message,
        flagged=training.flagged_replies() if config.use_flags else set(),
        include_context=config.include_context, val_fraction=config.val_fraction, seed=config.seed,
        max_conversations=config.max_conversations, dataset_info=info,
        tool_turns=config.method == "lora")  # a tuned model learns to call the client's tools
    if not examples.train:
        raise RuntimeError(f"no training conversations left after the filter: {examples.dropped}")
    progress(stage="data ready", data=examples.counts())
    out_dir = home_dir("factory", config.name)
    work_dir = home_dir("jobs", job_id or f"local-{config.name}")
    (out_dir / "job.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True,
                                                     sort_keys=False), encoding="utf-8")
    backend = BACKENDS[config.method]()
    outcome = backend.run(Context(config, examples, out_dir, work_dir, progress,
                                  lambda: stop_requested(job_id), resume))
    if outcome.cancelled or not main_rank:
        return {"cancelled": outcome.cancelled}
    wall = time.time() - started
    progress(stage="writing report")
    details = report.details(config, examples, outcome, wall)
    report_path = report.write(out_dir, config, examples, outcome, details)
    entry = register(config, examples, outcome, details, report_path)
    result = {"model": entry.name, "access_point": entry.access_point, "report": str(report_path),
              "out_dir": str(out_dir), "metrics": outcome.metrics, "epochs": outcome.epochs,
              "wall_s": wall}
    progress(stage="done")
    return result


def register(config: JobConfig, examples: Any, outcome: Any, details: dict, report_path: Path) -> Any:
    """A registry entry holding everything needed to rebuild the model."""
    from core import registry

    training = {
        "method": config.method, "job_config": config.model_dump(mode="json"),
        "dataset": examples.dataset, "filter": examples.settings, "data": examples.counts(),
        "seed": config.seed, "hyperparameters": outcome.hyperparameters, "epochs": outcome.epochs,
        "metrics": outcome.metrics, "versions": details["versions"], "hardware": details["hardware"],
        "wall_s": details["wall_s"], "estimated_cost_usd": details["estimated_cost_usd"],
        "report": str(report_path), **outcome.extra,
    }
    how = {"lora": "LoRA adapter", "prompt": "prompt-engineered", "remote": "provider fine-tune"}[config.method]
    entry = registry.Entry(
        name=config.name, type=outcome.type, base_model=config.base_model,
        access_point=outcome.access_point, customer=config.customer, status="candidate",
        description=f"{how} for {config.customer} on {config.base_model} from {examples.dataset.get('key')}"
                    + (f"; serve with: python -m core.serve {config.name}" if config.method == "lora" else ""),
        prompt_template=outcome.prompt_template, adapter_path=outcome.adapter_path,
        training=json.loads(json.dumps(training, default=str)))
    registry.upsert(entry)
    return entry


# ---------------------------------------------------------------- jobs

def start(config: JobConfig, *, checked: bool = False) -> jobs.Job:
    """Pre-flight, record the job and run it in a background process (what the Factory page calls).

    Raises preflight.PreflightError before any job row exists; `checked`: the caller already ran it."""
    if not checked:
        from core import preflight

        preflight.require(preflight.training(config))
    job = jobs.create(KIND, config.name, config.model_dump(mode="json"))
    jobs.spawn(job, ["-m", "core.factory", "run-job", job.id])
    return jobs.get(job.id, check_alive=False)


def report_parts(path: str | None) -> list[tuple] | None:
    """A training report cut for drawing; None when there is none yet.

    ("image", file, caption) for a figure beside the report; ("markdown", text, files) for the
    rest, its links to files beside the report turned into code spans (a link would 404 in the
    browser) and those files listed as (label, file) to offer as downloads.
    """
    if not path or not Path(path).exists():
        return None
    folder, link = Path(path).parent, r"\[([^\]]+)\]\(([^)\s]+)\)"
    parts: list[tuple] = []
    for part in re.split(r"(!\[[^\]]*\]\([^)]+\))", Path(path).read_text(encoding="utf-8")):
        image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", part)
        if image and (folder / image.group(2)).exists():
            parts.append(("image", folder / image.group(2), image.group(1)))
        elif part.strip():
            files = [(label, folder / target) for label, target in re.findall(link, part)
                     if "://" not in target and (folder / target).is_file()]
            text = re.sub(link, lambda m: f"`{m.group(1)}`" if (folder / m.group(2)).is_file() else m.group(0), part)
            parts.append(("markdown", text, files))
    return parts


def resumable(job: jobs.Job) -> bool:
    """Resume helps a cancelled job or a LoRA job that left a checkpoint, not a job refused by its data."""
    if job.status == "cancelled":
        return True
    return job.status == "failed" and any((job.dir / "checkpoints").glob("checkpoint-*"))


def resume(job_id: str, background: bool = True) -> jobs.Job:
    """Continue a failed or cancelled job (LoRA: from its last checkpoint)."""
    job = jobs.get(job_id)
    if job.active:
        raise RuntimeError(f"job {job_id} is still {job.status}")
    jobs.update(job_id, status="queued", error=None, pid=None)
    if background:
        jobs.spawn(job, ["-m", "core.factory", "run-job", job_id, "--resume"])
        return jobs.get(job_id, check_alive=False)
    execute(job_id, resume=True)
    return jobs.get(job_id)


def execute(job_id: str, *, resume: bool = False) -> int:
    """Run a recorded job in this process: status, result or error with the traceback."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: CANCEL.set()) if main_thread else None
    job = jobs.get(job_id, check_alive=False)
    if job.status == "cancelling":  # cancelled while queued: do not start at all
        jobs.update(job_id, status="cancelled", error="cancelled before it started")
        return 3
    jobs.update(job_id, status="running", pid=os.getpid())
    try:
        result = run(make_config(job.config), job_id, resume=resume)
    except JobCancelled as exc:
        print(str(exc), flush=True)
        result = {"cancelled": True}
    except BaseException as exc:  # any failure is recorded, with its log
        text = "".join(traceback.format_exception(exc))
        print(text, file=sys.stderr, flush=True)
        jobs.update(job_id, status="failed", error=f"{type(exc).__name__}: {exc}\n\n{text[-4000:]}")
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if result.get("cancelled"):
        jobs.update(job_id, status="cancelled", error="cancelled")
        return 3
    jobs.update(job_id, status="done", result=result)
    print(f"done: {json.dumps(result, ensure_ascii=False, default=str)}", flush=True)
    return 0


# ---------------------------------------------------------------- CLI

FLAGS = {  # CLI flag -> config path
    "customer": "customer", "dataset": "dataset", "data_url": "data_url", "method": "method",
    "base_model": "base_model", "name": "name", "seed": "seed", "epochs": "epochs",
    "min_label": "min_label", "intervention": "intervention", "device": "device",
    "max_conversations": "max_conversations", "lr": "lora.learning_rate",
    "batch_size": "lora.batch_size", "max_steps": "lora.max_steps", "max_seq_len": "lora.max_seq_len",
    "eval_steps": "lora.eval_steps", "lora_r": "lora.r", "few_shot": "prompt.few_shot",
}


def _flag_help(dotted: str) -> str:
    """The config field's own description and default, so the CLI and the page say the same."""
    model: Any = JobConfig
    *parents, leaf = dotted.split(".")
    for p in parents:
        model = model.model_fields[p].annotation
    info = model.model_fields[leaf]
    default = "required" if info.is_required() else f"default: {info.default}"
    return f"{info.description} ({default})"


def _set(values: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        values = values.setdefault(p, {})
    values[leaf] = value


def config_from_args(args: argparse.Namespace) -> JobConfig:
    values: dict = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {} if args.config else {}
    for flag, dotted in FLAGS.items():
        if getattr(args, flag, None) is not None:
            _set(values, dotted, getattr(args, flag))
    for item in args.set or []:
        key, _, raw = item.partition("=")
        _set(values, key, yaml.safe_load(raw))
    try:
        return make_config(values)
    except ValidationError as exc:
        raise SystemExit(f"error: invalid job config{f' in {args.config}' if args.config else ''}:\n{exc}")


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def _describe(job: jobs.Job) -> str:
    p = job.progress or {}
    step = f"{p.get('step')}/{p.get('total')}" if p.get("total") else ""
    loss = p.get("train") and f"loss {p['train'][-1][1]:.4f}"
    val = p.get("val") and f"val {p['val'][-1][1]:.4f}"
    speed = p.get("tokens_per_s") and f"{p['tokens_per_s']:.0f} tok/s"
    eta = p.get("eta_s") and f"ETA {p['eta_s']:.0f}s"
    bits = [b for b in (p.get("stage"), step, loss, val, speed, eta) if b]
    return f"{job.id}  {job.status:10} {job.name:36} {'  '.join(bits)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.factory", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    train = sub.add_parser("train", help="train a model (foreground; --background to detach)")
    train.add_argument("--config", help="job YAML (JobConfig fields); flags override it")
    for flag, dotted in FLAGS.items():
        kind = int if flag in ("seed", "epochs", "batch_size", "max_steps", "max_seq_len", "eval_steps",
                               "lora_r", "few_shot", "max_conversations") else (
            float if flag in ("lr", "min_label") else str)
        train.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=_flag_help(dotted))
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="any field, e.g. lora.alpha=32")
    train.add_argument("--background", action="store_true", help="run detached; prints the job id")
    run_job = sub.add_parser("run-job", help=argparse.SUPPRESS)
    run_job.add_argument("job")
    run_job.add_argument("--resume", action="store_true")
    sub.add_parser("status").add_argument("job")
    can = sub.add_parser("cancel", help="stop a job at its next step (checkpoint kept); --now: at once")
    can.add_argument("job")
    can.add_argument("--now", action="store_true", help="kill it now; the step in progress is lost")
    res = sub.add_parser("resume", help="continue a failed/cancelled job from its last checkpoint")
    res.add_argument("job")
    res.add_argument("--background", action="store_true")
    sub.add_parser("list", help="recent jobs")
    args = parser.parse_args(argv)

    if args.cmd == "train":
        config = config_from_args(args)
        from core import preflight

        try:
            for warning in preflight.require(preflight.training(config)):
                print(f"warning: {warning}", file=sys.stderr)
        except preflight.PreflightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.background:
            job = start(config, checked=True)
            print(job.id)
            return 0
        job_id = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # `accelerate launch`: ranks share one job folder
            if not (args.name or "name" in (yaml.safe_load(open(args.config)) if args.config else {})):
                raise SystemExit("error: give the job a --name under accelerate launch (ranks must agree)")
            job_id = f"{config.name}-{os.environ.get('MASTER_PORT', '0')}"
            if int(os.environ.get("RANK", "0")) != 0:  # other ranks train only; rank 0 records
                run(config, job_id)
                return 0
        job = jobs.create(KIND, config.name, config.model_dump(mode="json"), job_id=job_id)
        print(f"job {job.id}: {config.name} (log {job.log_path})", flush=True)
        log = open(job.log_path, "a", encoding="utf-8")
        sys.stdout, sys.stderr = _Tee(sys.__stdout__, log), _Tee(sys.__stderr__, log)
        from core.redact import install_stream_filter

        install_stream_filter()  # a foreground job's log file gets no key either (background jobs: core.jobs)
        return execute(job.id)
    if args.cmd == "run-job":
        return execute(args.job, resume=args.resume)
    try:
        if args.cmd == "list":
            for job in jobs.list_jobs(KIND):
                print(_describe(job))
        elif args.cmd == "status":
            job = jobs.get(args.job)
            print(_describe(job))
            print(json.dumps({"result": job.result, "error": job.error}, ensure_ascii=False, indent=2, default=str))
            print("--- log tail ---\n" + jobs.log_tail(job))
        elif args.cmd == "cancel":
            print(_describe(jobs.stop_now(args.job) if args.now else jobs.cancel(args.job)))
        elif args.cmd == "resume":
            print(_describe(resume(args.job, background=args.background)))
    except (KeyError, RuntimeError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from core.factory import main as _main  # the imported module's state, not __main__'s

    sys.exit(_main())
