"""Pre-flight: launches that would fail or produce garbage are refused before a job or run exists."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import factory, jobs, preflight, registry
from core.eval import cli as eval_cli, store as eval_store
from tests.helpers_llm import tiny_model_dir

FACTORY_PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Factory.py")


@pytest.fixture(autouse=True)
def registry_file(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    path.write_text("models: []\n", encoding="utf-8")
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    registry.upsert(registry.Entry(name="gem", type="base", base_model="g", access_point="gemini/gemini-2.5-flash"))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _config(**values):
    return factory.make_config({"customer": "shop_zh", "dataset": "demo", **values})


def test_empty_lora_base_is_refused_and_nothing_is_recorded():
    with pytest.raises(preflight.PreflightError, match="base model is empty"):
        factory.start(_config(method="lora", base_model=""))
    assert jobs.list_jobs() == []
    assert set(registry.load().entries) == {"gem"}  # no broken candidate registered


def test_remote_job_without_url_or_key_names_both():
    problems = preflight.training(_config(method="remote", base_model="gpt-4o-mini-2024-07-18"))
    text = "\n".join(map(str, problems))
    assert "remote.base_url" in text and "OPENAI_API_KEY is not set" in text
    bad = preflight.training(_config(method="remote", base_model="x",
                                     remote={"base_url": "api.openai.com/v1"}))
    assert any("not an http(s) URL" in p.what for p in bad)


def test_warmup_at_or_above_max_steps_is_refused_with_the_numbers():
    problems = preflight.lora_settings(_config(lora={"warmup_steps": 5, "max_steps": 3}).lora)
    assert len(problems) == 1 and "warmup_steps (5) >= max_steps (3)" in problems[0].what
    assert "below 3" in problems[0].fix
    assert preflight.lora_settings(_config(lora={"warmup_steps": 2, "max_steps": 3}).lora) == []


def test_token_budget_gives_the_numbers_and_the_fix():
    tiny = str(tiny_model_dir())
    problems = preflight.training(_config(method="lora", base_model=tiny, lora={"max_seq_len": 24}))
    budget = [p for p in problems if "max_seq_len=24" in p.what]
    assert budget and budget[0].severity == "error"
    assert "system prompt" in budget[0].what and "context" in budget[0].what
    needed = int(budget[0].fix.split("at least ")[1].split(" ")[0])
    assert needed > 24
    # with that budget 95% fit: no longer refused
    ok = preflight.training(_config(method="lora", base_model=tiny, lora={"max_seq_len": needed}))
    assert not [p for p in ok if p.severity == "error"]


def test_model_without_key_is_refused_for_an_eval_run(capsys):
    problems = preflight.eval_run("gem", "shop_zh")
    assert problems and "set GEMINI_API_KEY" in problems[0].what
    assert preflight.eval_run("nope", "shop_zh")[0].what == "unknown model 'nope'"
    code = eval_cli.main(["run", "--model", "gem", "--customer", "shop_zh"])
    assert code == 2 and "GEMINI_API_KEY" in capsys.readouterr().err
    assert eval_store.runs() == []  # no run was created, so nothing is charted


def test_factory_cli_refuses_with_the_reason(capsys):
    code = factory.main(["train", "--customer", "shop_zh", "--method", "remote", "--base-model", "m"])
    err = capsys.readouterr().err
    assert code == 2 and "refused before launch" in err and "remote.base_url" in err
    assert jobs.list_jobs() == []


def test_factory_page_shows_the_problem_and_the_fix_and_launches_nothing():
    at = AppTest.from_file(FACTORY_PAGE, default_timeout=60).run()
    at.selectbox(key="factory_customer").set_value("shop_zh")
    at.radio(key="method").set_value("lora")
    at.text_input(key="base_model").set_value("")
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("base model is empty" in e and "Fix:" in e for e in errors)
    assert any("Not launched" in e for e in errors)
    assert jobs.list_jobs() == []
