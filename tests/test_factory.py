"""Model factory: examples, label mask, LoRA / prompt / remote backends, jobs, registry and report.

Every model here is the tiny random Llama from tests.helpers_llm (the real transformers and
peft code path, built in a second); nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import pytest
import yaml

from core import factory, jobs, registry, training
from core.dataset import get_customer, load_dataset
from core.store import db
from tests.fake_tuning_api import FakeTuningAPI
from tests.helpers_llm import tiny_model_dir


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


@pytest.fixture(scope="module")
def tiny():
    return str(tiny_model_dir())


def config(tiny: str, **overrides) -> factory.JobConfig:
    """A quick LoRA job on 10 shop_zh conversations with the tiny model."""
    values = {"customer": "shop_zh", "base_model": tiny, "name": "test-model", "max_conversations": 10,
              "include_context": False, "val_fraction": 0.2,
              "lora": {"learning_rate": 5e-3, "warmup_steps": 0, "max_seq_len": 384, "batch_size": 4}}
    for key, value in overrides.items():
        if isinstance(value, dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return factory.make_config(values)


def record(cfg: factory.JobConfig) -> jobs.Job:
    return jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))


# ---------------------------------------------------------------- examples

@dataclass(frozen=True)
class S:
    id: str
    dialog: list
    label: float
    human_intervention_idx: int
    context: dict


class FakeDS:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    labels = property(lambda self: [s.label for s in self.samples])
    interventions = property(lambda self: [s.human_intervention_idx for s in self.samples])


def u(text):
    return {"role": "user", "content": text}


def a(text):
    return {"role": "assistant", "content": text}


SAMPLES = [
    S("good", [u("订单到哪了"), a("已为您查询"), a("已为您查询"), u("谢谢"), a("坏回复")], 0.9, -1, {"user": {"vip": 1}}),
    S("poor", [u("你好"), a("嗯")], 0.3, -1, {}),
    S("handoff", [u("退款"), a("好的"), u("我要投诉"), a("别投诉")], 0.8, 2, {}),
    S("early", [u("转人工"), a("好的")], 0.95, 0, {}),
    S("leak", [u("发票"), a("好的"), u("开吧"), a("内部备注: 进货价")], 0.85, 3, {}),
]


def build(mode, flagged=()):
    return training.build_examples(FakeDS(SAMPLES), threshold=0.7, intervention=mode, handoff_message="转人工",
                                   flagged=set(flagged), val_fraction=0.0)


def test_filter_counts_reasons_and_handoff_modes():
    teach = build("teach_handoff", flagged={"坏回复"})
    assert teach.dropped == {"label <= 0.7": 1}
    by_id = {e.id: e for e in teach.kept}
    assert by_id["handoff"].messages[-1] == a("转人工") and by_id["handoff"].messages[-2] == u("我要投诉")
    assert by_id["leak"].messages[-1] == a("转人工") and "内部备注" not in str(by_id["leak"].messages)
    assert by_id["early"].messages == [u("转人工"), a("转人工")]
    good = by_id["good"]
    assert good.messages[0]["role"] == "system" and "vip" in good.messages[0]["content"]  # context, as at inference
    weights = [(m["content"], w) for m, w in zip(good.messages, good.weights) if m["role"] == "assistant"]
    assert weights == [("已为您查询", 1.0), ("已为您查询", 0.0), ("坏回复", 0.0)]  # repeat and flagged: context only
    assert teach.zero_weight == {"empty or repeats the previous agent turn": 1, "flagged in the sandbox": 1}

    cut = build("cut")
    assert cut.dropped == {"label <= 0.7": 1, "no agent turn before the human took over": 1}
    by_id = {e.id: e for e in cut.kept}
    assert by_id["handoff"].messages == [u("退款"), a("好的")]  # trailing user turn trimmed: nothing to learn
    assert by_id["leak"].messages == [u("发票"), a("好的")]
    counts = cut.counts()
    assert counts["conversations"] == {"kept": 3, "dropped": 2, "total": 5}


def test_sandbox_flags_are_read_by_exact_reply():
    database = db()
    database["sandbox_sessions"].insert({"id": "s1", "models": "[]", "customer": "shop_zh"})
    database["sandbox_messages"].insert_all([
        {"id": "m1", "session_id": "s1", "model": "x", "seq": 1, "role": "assistant", "content": " 坏回复 "},
        {"id": "m2", "session_id": "s1", "model": "x", "seq": 2, "role": "user", "content": "你好"}])
    database["flags"].insert_all([{"id": "f1", "session_id": "s1", "message_id": "m1", "category": "rude"},
                                  {"id": "f2", "session_id": "s1", "message_id": "m2", "category": "x"}])
    assert training.flagged_replies() == {"坏回复"}


def test_split_is_by_conversation_and_seeded():
    examples = [training.Example(f"c{i}", [a("x")], [1.0], 0.9, -1) for i in range(20)]
    train, val = training.split(examples, 0.2, seed=1)
    again = training.split(examples, 0.2, seed=1)
    other = training.split(examples, 0.2, seed=2)
    assert len(val) == 4 and len(train) == 16
    assert not {e.id for e in train} & {e.id for e in val}
    assert [e.id for e in val] == [e.id for e in again[1]] != [e.id for e in other[1]]


def test_only_agent_tokens_carry_loss(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    example = training.Example("c", [{"role": "system", "content": "ctx"}, u("订单到哪了？"), a("已为您查询，明天到。"),
                                     u("好"), a("坏回复"), u("谢谢"), a("不客气")],
                               [0, 0, 1, 0, 0, 0, 1], 0.9, -1)
    item = training.tokenize(example, tok, 4096)
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels)
    assert tok.decode(ids) == tok.apply_chat_template(example.messages, tokenize=False)
    trained = [t for t, lab in zip(ids, labels) if lab != -100]
    assert tok.decode(trained) == "已为您查询，明天到。<|im_end|>\n不客气<|im_end|>\n"
    assert all(lab in (-100, t) for t, lab in zip(ids, labels))
    # the weight-0 reply, the user turns, the system context and the role headers carry no loss
    masked = tok.decode([t for t, lab in zip(ids, labels) if lab == -100])
    assert "坏回复" in masked and "订单到哪了" in masked and "<|im_start|>assistant" in masked
    # truncation keeps the mask aligned; nothing trainable left -> None
    assert training.tokenize(example, tok, 8) is None


# ---------------------------------------------------------------- LoRA

def test_lora_lowers_validation_loss_registers_and_reports(tiny, registry_file):
    cfg = config(tiny, lora={"max_epochs": 3, "patience": 1})  # epochs by validation loss
    job = record(cfg)
    assert factory.execute(job.id) == 0
    done = jobs.get(job.id)
    assert done.status == "done", done.error
    m = done.result["metrics"]
    assert m["val_loss_after"] < m["val_loss_before"]
    assert m["tokens_per_s"] > 0 and m["train_tokens"] > 0
    assert done.progress["train"] and done.progress["val"] and done.progress["step"] == done.progress["total"]

    entry = registry.get("test-model")
    assert entry.type == "finetune" and entry.access_point == "local/test-model" and entry.base_model == tiny
    assert registry.resolve_path(entry.adapter_path).joinpath("adapter_config.json").exists()
    t = entry.training
    path = load_dataset("shop_zh/demo")  # noqa: F841  (the file the hash must match)
    digest = hashlib.sha256(open(t["dataset"]["path"], "rb").read()).hexdigest()
    assert t["dataset"]["key"] == "shop_zh/demo" and t["dataset"]["sha256"] == digest
    assert t["filter"]["min_label"] == get_customer("shop_zh").threshold
    assert t["filter"]["intervention"] == "teach_handoff" and t["filter"]["handoff_message"]
    assert t["seed"] == 0 and t["hyperparameters"]["learning_rate"] == 5e-3 and t["hyperparameters"]["r"] == 8
    assert t["epochs"]["value"] > 0 and ("early stopping" in t["epochs"]["reason"] or "max_epochs" in t["epochs"]["reason"])
    assert {"torch", "transformers", "peft", "accelerate", "python"} <= set(t["versions"])
    assert t["hardware"]["device"] == "cpu" and t["wall_s"] > 0 and t["estimated_cost_usd"] >= 0
    assert t["data"]["conversations"]["kept"] == 10 and t["job_config"]["lora"]["patience"] == 1

    report = open(t["report"], encoding="utf-8").read()
    for needle in ("## Data used", "| conversations | 10 |", "Dropped conversations", "## Epochs", "Why:",
                   "loss.png", "data.png", "Validation loss before", "## Hyperparameters", "wall time",
                   "hardware", "tokens/s", "estimated cost", "transformers"):
        assert needle in report, needle
    folder = registry.resolve_path(entry.adapter_path).parent
    assert (folder / "loss.png").stat().st_size > 1000 and (folder / "data.png").exists()
    assert yaml.safe_load((folder / "job.yaml").read_text())["name"] == "test-model"


class StopAfter:
    """Stands in for the SIGTERM flag: 'cancelled' once the job has recorded n optimiser steps
    (the flag is also read between stages, so counting reads would stop it before training)."""

    def __init__(self, n, job_id):
        self.n, self.job_id = n, job_id

    def is_set(self):
        return (jobs.get(self.job_id).progress.get("step") or 0) >= self.n


def test_resume_continues_from_the_checkpoint(tiny, monkeypatch):
    cfg = config(tiny, name="resumed", lora={"max_steps": 6, "eval_steps": 2})
    job = record(cfg)
    monkeypatch.setattr(factory, "CANCEL", StopAfter(3, job.id))
    assert factory.run(cfg, job.id) == {"cancelled": True}
    last = max(int(p.name.split("-")[1]) for p in (job.dir / "checkpoints").iterdir())
    assert 3 <= last < 6  # stopped mid-run, with a checkpoint at the step it stopped
    monkeypatch.setattr(factory, "CANCEL", threading.Event())
    result = factory.run(cfg, job.id, resume=True)
    assert result["metrics"]["resumed_from_step"] == last
    assert [s for s, _ in jobs.get(job.id).progress["train"]] == [1, 2, 3, 4, 5, 6]  # history kept across the restart
    assert "max_steps=6" in result["epochs"]["reason"]


def test_cancel_stops_a_background_job(tiny):
    cfg = config(tiny, name="to-cancel", epochs=50)
    job = factory.start(cfg)
    deadline = time.time() + 180
    while (jobs.get(job.id).progress.get("step") or 0) < 1:
        assert time.time() < deadline and jobs.get(job.id).status != "failed", jobs.get(job.id).error
        time.sleep(0.5)
    jobs.cancel(job.id)
    while jobs.get(job.id).active:
        assert time.time() < deadline
        time.sleep(0.5)
    assert jobs.get(job.id).status == "cancelled"


# ---------------------------------------------------------------- jobs

def test_a_failing_job_is_recorded_as_failed(tmp_path):
    cfg = factory.make_config({"customer": "shop_zh", "base_model": str(tmp_path / "no-such-model"), "name": "broken"})
    job = record(cfg)
    assert factory.execute(job.id) == 1
    failed = jobs.get(job.id)
    assert failed.status == "failed" and "no-such-model" in failed.error
    with pytest.raises(registry.UnknownModel):
        registry.get("broken")


def test_a_killed_job_is_marked_failed_with_its_log():
    job = jobs.create(factory.KIND, "killed", {})
    jobs.spawn(job, ["-c", "print('step 1 of 9', flush=True); import os; os._exit(9)"])
    deadline = time.time() + 30
    while jobs.pid_alive(jobs.get(job.id, check_alive=False).pid):
        assert time.time() < deadline
        time.sleep(0.1)
    dead = jobs.get(job.id)
    assert dead.status == "failed" and "killed or crashed" in dead.error and "step 1 of 9" in dead.error


def test_config_is_strict_and_loads_from_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("customer: shop_zh\nmethod: lora\nlora:\n  r: 16\n  learnig_rate: 0.1\n")
    with pytest.raises(ValueError, match="learnig_rate"):
        factory.load_config(path)
    path.write_text("customer: shop_zh\nlora:\n  r: 16\n")
    cfg = factory.load_config(path)
    assert cfg.lora.r == 16 and cfg.name.startswith("shop_zh-lora-")
    for model in (factory.JobConfig, factory.LoraSettings, factory.PromptSettings, factory.RemoteSettings):
        assert all(f.description for f in model.model_fields.values()), model  # help text everywhere


def test_cli_lists_and_shows_jobs(capsys):
    job = jobs.create(factory.KIND, "listed", {})
    jobs.update(job.id, status="done", pid=None)
    assert factory.main(["list"]) == 0 and "listed" in capsys.readouterr().out
    assert factory.main(["status", job.id]) == 0 and "done" in capsys.readouterr().out
    assert factory.main(["status", "nope"]) == 2


# ---------------------------------------------------------------- prompt

def test_prompt_backend_uses_the_top_labelled_conversations(tiny):
    cfg = config(tiny, name="shop-prompt", method="prompt", max_conversations=None, prompt={"few_shot": 3})
    job = record(cfg)
    assert factory.execute(job.id) == 0
    ds = load_dataset("shop_zh/demo")
    threshold = get_customer("shop_zh").threshold
    ranked = sorted((i for i in range(len(ds)) if ds.labels[i] > threshold),
                    key=lambda i: (-ds.labels[i], ds.interventions[i] >= 0, ds[i].id))
    expected = [ds[i].id for i in ranked[:3]]
    entry = registry.get("shop-prompt")
    assert entry.type == "prompt" and entry.training["metrics"]["few_shot_ids"] == expected
    first_user = next(m["content"] for m in ds[ranked[0]].dialog if m["role"] == "user")
    assert first_user in entry.prompt_template
    assert all(k in entry.prompt_template for k in ("{policy}", "{context}", "{history}", "{question}"))
    extra = entry.training["metrics"]["extra_prompt_tokens_per_call"]
    assert extra > 100
    report = open(entry.training["report"], encoding="utf-8").read()
    assert f"Extra prompt tokens per call: **{extra}**" in report


# ---------------------------------------------------------------- remote

def remote_config(tiny, api, **remote):
    return config(tiny, name="shop-remote", method="remote", epochs=2,
                  remote={"base_url": api.base_url, "poll_interval_s": 0.01,
                          "provider_model": "gpt-4.1-mini-2025-04-14", **remote})


def test_remote_backend_uploads_polls_and_registers(tiny, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeTuningAPI() as api:
        job = record(remote_config(tiny, api))
        assert factory.execute(job.id) == 0, jobs.get(job.id).error
    assert api.requests[:3] == ["POST /v1/files", "POST /v1/files", "POST /v1/fine_tuning/jobs"]
    assert sum(r.startswith("GET /v1/fine_tuning/jobs/") for r in api.requests) >= 4
    provider_job = next(iter(api.jobs.values()))
    assert provider_job["body"]["hyperparameters"]["n_epochs"] == 2
    lines = api.files[provider_job["body"]["training_file"]]["lines"]
    assert all("weight" in m for line in lines for m in line["messages"] if m["role"] == "assistant")
    entry = registry.get("shop-remote")
    model_id = provider_job["fine_tuned_model"]
    assert entry.type == "finetune" and entry.access_point == f"{api.base_url}#{model_id}"
    assert entry.training["provider"]["job_id"] == provider_job["id"]
    assert entry.training["metrics"]["estimated_cost_usd"] == pytest.approx(provider_job["trained_tokens"] * 5.0 / 1e6)
    assert "test-key" not in open(registry.load().path, encoding="utf-8").read()  # no secret stored
    progress = jobs.get(job.id).progress
    assert progress["train"] and progress["step"] == progress["total"] == 4


def test_remote_failure_is_a_failed_job(tiny, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    with FakeTuningAPI() as api:
        job = record(remote_config(tiny, api, provider_model="will-fail"))
        assert factory.execute(job.id) == 1
    failed = jobs.get(job.id)
    assert failed.status == "failed" and "training failed: bad base model" in failed.error


def test_training_data_can_come_from_the_data_service(tiny):
    from core.api import create_app
    from tests.helpers_llm import serve_app

    with serve_app(create_app()) as server:
        url = server.url.removesuffix("/v1")
        cfg = config(tiny, name="remote-data", method="prompt", data_url=url, max_conversations=None)
        job = record(cfg)
        assert factory.execute(job.id) == 0, jobs.get(job.id).error
    local = config(tiny, name="local-data", method="prompt", max_conversations=None)
    assert factory.execute(record(local).id) == 0
    remote_t, local_t = registry.get("remote-data").training, registry.get("local-data").training
    assert remote_t["dataset"]["url"] == url and len(remote_t["dataset"]["sha256"]) == 64
    assert remote_t["data"] == local_t["data"]  # the same conversations kept and dropped, over HTTP
    assert remote_t["metrics"]["few_shot_ids"] == local_t["metrics"]["few_shot_ids"]


def test_cli_flags_carry_the_config_fields_help_and_defaults(capsys):
    from core import factory

    with pytest.raises(SystemExit):
        factory.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--lora-r LORA_R LoRA rank (default: 8)" in out
    assert "--customer CUSTOMER customer folder name, e.g. shop_zh (required)" in out
