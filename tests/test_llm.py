"""core.llm: the local provider on a tiny random model, LoRA, prompt templates, clear errors."""
from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import llm, registry
from core.paths import ROOT
from tests.helpers_llm import FakeAgent, tiny_entries, tiny_lora_dir, tiny_model_dir, write_registry

HELLO = [{"role": "user", "content": "Hello, where is my order?"}]


@pytest.fixture
def reg(tmp_path, monkeypatch):
    """A registry with the tiny model, its LoRA fine-tune and a Gemini entry."""
    path = write_registry(tmp_path / "registry.yaml", tiny_entries() + [
        {"name": "gem", "type": "base", "base_model": "gemini-2.5-flash", "access_point": "gemini/gemini-2.5-flash"}])
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def test_import_is_light():
    code = "import sys, core.llm, core.registry; print(sorted({'torch', 'litellm', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_local_provider_generates_through_litellm(reg):
    c = llm.chat("tiny", HELLO, max_tokens=12)
    assert c.ok, c.error
    assert c.text and c.output_tokens == 12 and c.input_tokens > 10
    assert c.cost_usd == 0.0 and c.latency_s > 0
    # the same model by folder, and again (cached): identical greedy output
    again = llm.chat(f"local/{tiny_model_dir()}", HELLO, max_tokens=12)
    assert again.text == c.text


def test_lora_adapter_changes_the_output(reg):
    base = llm.chat("tiny", HELLO, max_tokens=16)
    tuned = llm.chat("tiny-ft", HELLO, max_tokens=16)
    by_folder = llm.chat(f"local/{tiny_lora_dir()}", HELLO, max_tokens=16)
    assert base.ok and tuned.ok, (base.error, tuned.error)
    assert tuned.text != base.text
    assert by_folder.text == tuned.text
    model, tokenizer = llm.load_local("tiny-ft")
    assert model.config.model_type == "llama" and tokenizer.chat_template


def test_stream_yields_pieces_then_completion(reg):
    items = list(llm.stream_chat("tiny", HELLO, max_tokens=10))
    final = items[-1]
    assert isinstance(final, llm.Completion) and final.ok
    assert all(isinstance(i, str) for i in items[:-1]) and len(items) >= 2
    assert final.output_tokens == 10 and final.input_tokens > 10
    assert final.text == "".join(items[:-1]).strip()


def test_sampling_is_reproducible_with_a_seed(reg):
    a = llm.chat("tiny", HELLO, temperature=1.0, seed=7, max_tokens=12)
    b = llm.chat("tiny", HELLO, temperature=1.0, seed=7, max_tokens=12)
    greedy = llm.chat("tiny", HELLO, max_tokens=12)
    assert a.text == b.text and a.text != greedy.text


def test_threads_share_one_model_safely(reg):
    expected = llm.chat("tiny", HELLO, max_tokens=8).text
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda _: llm.chat("tiny", HELLO, max_tokens=8).text, range(6)))
    assert texts == [expected] * 6


def test_prompt_template_gets_policy_context_history_question(tmp_path, monkeypatch):
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "prompt.md").write_text("Refunds within 7 days.", encoding="utf-8")
    monkeypatch.setattr(llm, "CUSTOMERS_DIR", tmp_path)
    with FakeAgent(["Sure."]) as agent:
        path = write_registry(tmp_path / "registry.yaml", [
            {"name": "agent", "type": "base", "base_model": "fake", "access_point": agent.url},
            {"name": "acme-prompt", "type": "prompt", "base_model": "agent", "access_point": agent.url,
             "customer": "acme", "prompt_template":
                 "POLICY[{policy}] CONTEXT[{context}] HISTORY[{history}] Q[{question}] {\"json\": 1}"}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "refund?"}]
        c = llm.chat("acme-prompt", msgs, context={"order": "A1"})
        assert c.ok and c.text == "Sure."
        sent = agent.requests[-1]["messages"]
    system = sent[0]["content"]
    assert sent[0]["role"] == "system" and sent[1:] == msgs  # the conversation stays messages
    assert "POLICY[Refunds within 7 days.]" in system and "CONTEXT[order: A1]" in system
    assert f"HISTORY[{llm.HISTORY_POINTER}]" in system and "refund?" not in system
    assert '{"json": 1}' in system  # braces in a template are left alone


def test_prompt_model_turns_share_a_stable_prefix(tmp_path, monkeypatch):
    """Turn n+1 starts with exactly turn n's messages + reply: a local KV cache can reuse them."""
    monkeypatch.setattr(llm, "CUSTOMERS_DIR", tmp_path)
    template = "Policy: {policy}\nContext: {context}\nSo far: {history}\nNew: {question}"
    turn1 = [{"role": "user", "content": "我的订单到哪了？"}]
    first = llm.render_prompt(template, turn1, {"order": "A1"}, None)
    turn2 = turn1 + [{"role": "assistant", "content": "在路上。"}, {"role": "user", "content": "几天到？"}]
    second = llm.render_prompt(template, turn2, {"order": "A1"}, None)
    assert second[:len(first)] == first and second[len(first)]["content"] == "在路上。"


def test_local_model_is_called_without_importing_litellm(reg):
    code = ("import sys; from core import llm; c = llm.chat('tiny', [{'role': 'user', 'content': 'hi'}], max_tokens=4);"
            "print(c.ok, c.output_tokens, 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "CSFORGE_TORCH_THREADS": "1"})
    assert out.stdout.split() == ["True", "4", "False"], out.stderr[-500:]


def test_context_reaches_a_plain_model_as_system_message():
    with FakeAgent(["ok"]) as agent:
        assert llm.chat(agent.url, HELLO, context={"tier": "gold"}).ok
        sent = agent.requests[-1]["messages"]
    assert sent[0]["role"] == "system" and "tier: gold" in sent[0]["content"]


def test_missing_key_names_the_variable(reg, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    c = llm.chat("gem", HELLO)
    assert not c.ok and "GEMINI_API_KEY" in c.error and c.text == ""
    assert "GEMINI_API_KEY" in llm.chat("gemini/gemini-2.5-flash", HELLO).error


def test_unknown_model_lists_the_registry(reg):
    c = llm.chat("no-such-model", HELLO)
    assert "unknown model 'no-such-model'" in c.error and "tiny-ft" in c.error
    assert "neither a registry name nor a folder" in llm.chat("local/nowhere", HELLO).error


def test_server_500_is_a_clear_error_after_retries():
    with FakeAgent(mode="500") as agent:
        c = llm.chat(agent.url, HELLO, timeout=10, retries=1)
        assert len(agent.requests) == 2
    assert c.error.startswith("server error 500") and "scripted failure" in c.error


def test_stalled_server_times_out_within_the_timeout():
    with FakeAgent(mode="stall", stall_s=20) as agent:
        start = time.monotonic()
        c = llm.chat(agent.url, HELLO, timeout=1.5, retries=2)
        elapsed = time.monotonic() - start
    assert c.error.startswith("timed out after 1.5s")
    assert elapsed < 3.0


def test_bad_json_and_unreachable_host():
    with FakeAgent(mode="badjson") as agent:
        c = llm.chat(agent.url, HELLO, timeout=5)
    assert "not valid JSON" in c.error
    c = llm.chat("http://127.0.0.1:9/v1", HELLO, timeout=3, retries=0)
    assert c.error.startswith("cannot reach http://127.0.0.1:9/v1")


def test_stream_from_a_url_and_its_errors():
    with FakeAgent(["one two three"]) as agent:
        items = list(llm.stream_chat(agent.url, HELLO))
    assert items[:-1] == ["one", " two", " three"] and items[-1].text == "one two three"
    assert items[-1].output_tokens == 3
    with FakeAgent(mode="500") as agent:
        items = list(llm.stream_chat(agent.url, HELLO, retries=0))
    assert len(items) == 1 and "server error 500" in items[0].error


def test_embedded_model_is_registered():
    assert llm.EMBEDDED_MODEL == "smollm2-135m"
    assert registry.load(ROOT / "registry.yaml").entries[llm.EMBEDDED_MODEL].access_point == "local/smollm2-135m"
