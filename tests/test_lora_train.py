"""LoRA training details: loss at trained positions only, exact resume after kill -9, small runs."""
from __future__ import annotations

import os
import signal
import time

import pytest

from core import factory, jobs, lora_trainer, training
from tests.helpers_llm import tiny_model_dir


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CSFORGE_REGISTRY", str(tmp_path / "registry.yaml"))
    monkeypatch.setenv("CSFORGE_TORCH_THREADS", "1")  # the same arithmetic in every process


def config(**overrides) -> factory.JobConfig:
    values = {"customer": "shop_zh", "dataset": "demo", "base_model": str(tiny_model_dir()), "name": "t", "max_conversations": 12,
              "include_context": False, "val_fraction": 0.2,
              "lora": {"learning_rate": 5e-3, "warmup_steps": 2, "max_seq_len": 256, "batch_size": 2}}
    for key, value in overrides.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    return factory.make_config(values)


def test_trained_positions_loss_equals_the_models_own_loss(monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir())
    ids = torch.randint(3, 200, (2, 24))
    labels = ids.clone()
    labels[:, :10] = -100
    labels[1, 15:] = -100
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    inputs = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    ours = lora_trainer.trained_positions_loss(model, inputs)
    theirs = model(**inputs).loss
    assert torch.allclose(ours, theirs, atol=1e-5), (ours, theirs)
    assert torch.allclose(lora_trainer.trained_positions_loss(model, inputs, num_items=7),
                          theirs * int((labels[:, 1:] != -100).sum()) / 7, atol=1e-5)
    # chunked (logits recomputed in backward): same loss, same gradients
    monkeypatch.setattr(lora_trainer, "CE_CHUNK", 3)
    chunked = lora_trainer.trained_positions_loss(model, inputs)
    chunked.backward()
    grad = model.lm_head.weight.grad.clone()
    model.zero_grad()
    model(**inputs).loss.backward()
    assert torch.allclose(chunked, theirs, atol=1e-5)
    assert torch.allclose(grad, model.lm_head.weight.grad, atol=1e-6)


def _wait(job_id: str, until, timeout: float = 300) -> jobs.Job:
    deadline = time.time() + timeout
    while True:
        job = jobs.get(job_id)
        if until(job):
            return job
        assert time.time() < deadline and job.status != "failed", job.error
        time.sleep(0.02)


def test_resume_after_kill_9_reproduces_the_uninterrupted_losses():
    """Data order, dropout RNG and the LR schedule all come back: the curves match step for step."""
    lora = {"max_steps": 12, "eval_steps": 3, "dropout": 0.1, "patience": 50}
    whole = factory.start(config(name="whole", lora=lora))
    killed = factory.start(config(name="killed", lora=lora))
    checkpoints = killed.dir / "checkpoints"
    _wait(killed.id, lambda j: (checkpoints / "checkpoint-3" / "trainer_state.json").exists() or not j.active)
    job = jobs.get(killed.id)
    assert job.active, "the job finished before it could be killed"
    os.kill(job.pid, signal.SIGKILL)
    _wait(killed.id, lambda j: not j.active)
    step_at_kill = max(s for s, _ in jobs.get(killed.id).progress.get("train", [[0, 0]]))
    assert step_at_kill < 12 and jobs.get(killed.id).status == "failed"
    factory.resume(killed.id)
    done_killed = _wait(killed.id, lambda j: j.status == "done")
    done_whole = _wait(whole.id, lambda j: j.status == "done")
    a, b = done_whole.progress["train"], done_killed.progress["train"]
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 13))
    for (step, x), (_, y) in zip(a, b):
        assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (step, x, y)
    val_a, val_b = done_whole.progress["val"], done_killed.progress["val"]
    assert [s for s, _ in val_a] == [s for s, _ in val_b]
    assert [v for _, v in val_a] == pytest.approx([v for _, v in val_b], rel=1e-4)
    m_whole, m_killed = done_whole.result["metrics"], done_killed.result["metrics"]
    assert m_killed["resumed_from_step"] in (3, 6, 9)
    assert m_killed["train_tokens"] == m_whole["train_tokens"] > 0  # counted over the whole run


def test_no_validation_set_trains_and_skips_evaluation(monkeypatch):
    cfg = config(name="noval", val_fraction=0.0, lora={"max_steps": 2})
    job = jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))
    result = factory.run(cfg, job.id)
    m = result["metrics"]
    assert m["val_examples"] == 0 and m["val_loss_before"] is None and m["val_loss_after"] is None
    assert m["peak_rss_mb"] > 50 and m["train_tokens"] > 0 and result["model"] == "noval"
    assert "no validation split" in result["epochs"]["reason"] or "max_steps" in result["epochs"]["reason"]
    report = open(result["report"], encoding="utf-8").read()
    assert f"| peak memory (RSS) | {m['peak_rss_mb']:.0f} MB |" in report


def test_validation_before_training_is_optional():
    cfg = config(name="nobefore", lora={"max_steps": 2, "eval_before": False})
    job = jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))
    m = factory.run(cfg, job.id)["metrics"]
    assert m["val_loss_before"] is None and m["val_loss_after"] is not None and m["val_examples"] > 0


def test_context_that_fills_max_seq_len_is_reported_with_numbers():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    long_context = {"role": "system", "content": "订单备注：" + "很长的内部说明。" * 60}
    short = training.Example("a", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                             [0.0, 1.0], 1.0, -1)
    crowded = training.Example("b", [long_context, *short.messages], [0.0, 0.0, 1.0], 1.0, -1)
    assert lora_trainer.context_overflow([short], tok, 256) is None
    info = lora_trainer.context_overflow([short, crowded, crowded], tok, 256)
    assert info["no_room"] == 2 and info["conversations"] == 3 and info["largest_prompt_tokens"] >= 256
    msg = lora_trainer.overflow_message(info)
    assert "2 of 3" in msg and str(info["largest_prompt_tokens"]) in msg and "max_seq_len=256" in msg


def test_gradient_checkpointing_turns_on_for_big_cpu_steps():
    from core.backends import checkpointing

    defaults = factory.LoraSettings()
    assert checkpointing(defaults, "cpu") is True  # 4 x 1024 tokens a step
    assert checkpointing(defaults, "cuda") is False
    assert checkpointing(factory.LoraSettings(batch_size=2, max_seq_len=256), "cpu") is False
    assert checkpointing(factory.LoraSettings(gradient_checkpointing=False), "cpu") is False


def test_a_checkpointed_run_trains_like_a_plain_one():
    losses = {}
    for gc in (False, True):
        cfg = config(name=f"gc{int(gc)}", val_fraction=0.0, lora={"max_steps": 2, "gradient_checkpointing": gc})
        job = jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))
        result = factory.run(cfg, job.id)
        assert result["metrics"]["train_tokens"] > 0
        losses[gc] = [v for _, v in jobs.get(job.id).progress["train"]]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
