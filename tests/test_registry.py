"""Registry: strict entries, bad ones reported by name and field, locked atomic writes."""
from __future__ import annotations

import multiprocessing as mp

import pytest

from core import registry
from core.paths import ROOT
from tests.helpers_llm import write_registry

GOOD = {"name": "m1", "type": "base", "base_model": "x", "access_point": "gemini/gemini-2.5-flash"}


@pytest.fixture
def reg_file(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def test_shipped_registry_is_valid_and_complete(monkeypatch):
    monkeypatch.delenv("CSFORGE_REGISTRY", raising=False)
    reg = registry.load(ROOT / "registry.yaml")
    assert reg.errors == []
    assert {"smollm2-135m", "gemini-3.5-flash-lite", "llama-3.1-8b-nebius", "shop_zh-prompt"} <= set(reg.entries)
    prompt = reg.entries["shop_zh-prompt"]
    assert prompt.type == "prompt" and prompt.base_model == "smollm2-135m" and prompt.customer == "shop_zh"
    for placeholder in registry.PLACEHOLDERS:
        assert placeholder in prompt.prompt_template


def test_bad_entry_is_named_and_the_rest_loads(reg_file):
    write_registry(reg_file, [GOOD, {**GOOD, "name": "bad", "type": "lora"},
                              {**GOOD, "name": "typo", "acces_point": "x"}, {**GOOD}])
    reg = registry.load()
    assert list(reg.entries) == ["m1"]
    joined = "\n".join(reg.errors)
    assert "'bad'" in joined and "field 'type'" in joined
    assert "'typo'" in joined and "acces_point" in joined
    assert "duplicate name" in joined


def test_unknown_name_lists_what_exists(reg_file):
    write_registry(reg_file, [GOOD])
    with pytest.raises(registry.UnknownModel, match="m1"):
        registry.get("nope")


def test_prompt_entry_needs_a_template(reg_file):
    write_registry(reg_file, [{**GOOD, "name": "p", "type": "prompt", "base_model": "m1"}])
    assert "prompt_template" in registry.load().errors[0]


def test_availability_names_the_missing_key(reg_file, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    write_registry(reg_file, [GOOD, {**GOOD, "name": "p", "type": "prompt", "base_model": "m1",
                                     "prompt_template": "{question}"}])
    assert registry.availability("m1") == (False, "set GEMINI_API_KEY")
    ok, why = registry.availability("p")
    assert not ok and "GEMINI_API_KEY" in why
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert registry.availability("m1")[0] is True


def test_update_and_metrics_merge(reg_file):
    registry.upsert(registry.Entry(**GOOD))
    registry.update("m1", status="production", description="d")
    registry.set_metrics("m1", {"pass_rate": 0.5})
    entry = registry.set_metrics("m1", {"error_rate": 0.1})
    assert entry.status == "production" and entry.metrics == {"pass_rate": 0.5, "error_rate": 0.1}
    with pytest.raises(Exception, match="status"):
        registry.update("m1", status="shipped")
    assert registry.get("m1").status == "production"  # the bad update wrote nothing


def _writer(path: str, worker: int, count: int) -> None:
    import os

    os.environ["CSFORGE_REGISTRY"] = path
    from core import registry as reg

    for i in range(count):
        reg.upsert(reg.Entry(name=f"w{worker}-{i}", type="base", base_model="x",
                             access_point="gemini/gemini-2.5-flash"))
        reg.set_metrics("shared", {f"w{worker}-{i}": i})


def test_concurrent_writers_lose_nothing(reg_file):
    registry.upsert(registry.Entry(name="shared", type="base", base_model="x", access_point="openai/gpt-4o"))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(reg_file), w, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reg = registry.load()
    assert reg.errors == []
    assert len(reg.entries) == 1 + 4 * 10
    assert len(reg.entries["shared"].metrics) == 4 * 10


def test_cli_validate_and_show(reg_file, capsys):
    write_registry(reg_file, [GOOD, {**GOOD, "name": "bad", "type": "nope"}])
    assert registry.main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "'bad'" in out and "field 'type'" in out
    assert registry.main(["show", "m1"]) == 0
    assert "gemini/gemini-2.5-flash" in capsys.readouterr().out
    assert registry.main(["show", "zzz"]) == 1


def test_local_entries_availability(reg_file, tmp_path):
    write_registry(reg_file, [
        {"name": "ft", "type": "finetune", "base_model": "smollm2-135m", "access_point": "local/ft",
         "adapter_path": str(tmp_path / "missing-adapter")},
        {"name": "folder", "type": "base", "base_model": str(tmp_path / "nowhere"), "access_point": "local/folder"}])
    ok, why = registry.availability("ft")
    assert not ok and "adapter folder" in why
    ok, why = registry.availability("folder")
    assert not ok and "nowhere" in why


def test_rewrites_keep_the_files_header_comments(reg_file):
    reg_file.write_text("# how to edit this file\n# keys never go here\nmodels: []\n")
    registry.upsert(registry.Entry(**GOOD))
    text = reg_file.read_text()
    assert text.startswith("# how to edit this file\n# keys never go here\nmodels:")
    assert registry.get(GOOD["name"]).name == GOOD["name"]
