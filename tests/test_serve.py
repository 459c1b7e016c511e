"""core.serve: OpenAI-compatible access point; LiteLLM reaches it on 127.0.0.1 and back."""
from __future__ import annotations

import json

import pytest

from core import llm, serve
from tests.helpers_llm import FakeAgent, serve_app, tiny_entries, write_registry

HELLO = [{"role": "user", "content": "Hi, my parcel is late."}]


@pytest.fixture
def reg(tmp_path, monkeypatch):
    path = write_registry(tmp_path / "registry.yaml", tiny_entries())
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


def test_models_and_bad_requests_get_openai_errors(reg):
    client = serve.make_app("tiny").test_client()
    assert client.get("/v1/models").get_json()["data"][0]["id"] == "tiny"
    cases = [
        (dict(data="not json", content_type="application/json"), "not valid JSON"),
        (dict(json={"messages": []}), "'messages'"),
        (dict(json={"messages": [{"role": "robot", "content": "x"}]}), "role"),
        (dict(json={"messages": HELLO, "max_tokens": "ten"}), "max_tokens"),
        (dict(json={"messages": HELLO, "context": "x"}), "context"),
    ]
    for kwargs, words in cases:
        r = client.post("/v1/chat/completions", **kwargs)
        err = r.get_json()["error"]
        assert r.status_code == 400 and words in err["message"] and err["type"] == "invalid_request_error"
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.get_json()


def test_finish_reason_says_length_when_max_tokens_cut_the_reply(reg):
    client = serve.make_app("tiny").test_client()  # a random model: it does not stop on its own in 6 tokens
    cut = client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 6}).get_json()
    assert cut["usage"]["completion_tokens"] == 6 and cut["choices"][0]["finish_reason"] == "length"
    events = client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 6, "stream": True}).get_data(
        as_text=True)
    finishes = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in events.splitlines()
                if line.startswith("data: {")]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}

    class Done:
        output_tokens = 5

    assert serve._finish_reason(Done, 6) == "stop" and serve._finish_reason(Done, 5) == "length"


def test_litellm_routes_to_core_serve_and_back(reg):
    direct = llm.chat("tiny-ft", HELLO, max_tokens=10)
    with serve_app(serve.make_app("tiny-ft")) as server:
        remote = llm.chat(server.url, HELLO, max_tokens=10)
        streamed = list(llm.stream_chat(server.url, HELLO, max_tokens=10))
    assert remote.ok, remote.error
    assert remote.text == direct.text
    assert (remote.input_tokens, remote.output_tokens) == (direct.input_tokens, direct.output_tokens)
    final = streamed[-1]
    assert final.ok and final.text == direct.text and final.output_tokens == 10


def test_upstream_failure_is_a_502_with_the_reason(tmp_path, monkeypatch):
    with FakeAgent(mode="500") as agent:
        path = write_registry(tmp_path / "r.yaml", [
            {"name": "flaky", "type": "base", "base_model": "x", "access_point": agent.url}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
        client = serve.make_app("flaky").test_client()
        r = client.post("/v1/chat/completions", json={"messages": HELLO})
        assert r.status_code == 502 and "server error 500" in r.get_json()["error"]["message"]
        r = client.post("/v1/chat/completions", json={"messages": HELLO, "stream": True})
        events = [line[6:] for line in r.get_data(as_text=True).splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert any("server error 500" in json.loads(e).get("error", {}).get("message", "") for e in events[:-1])


def test_cli_rejects_an_unknown_name(reg, capsys):
    assert serve.main(["nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
