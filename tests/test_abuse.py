"""Every probe of issue 12 replayed against real servers on 127.0.0.1 (waitress, as in production).

Each probe is bounded in count and time, checks the answer (status, the numbers in the message,
nothing echoed in full) and then that the server answers the next normal request within 5 s.
core.serve runs a tiny random Llama with a 40,000-token context built from a config, so a long
generation (about 1 ms a token here) can be started, abandoned and queued behind.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from core import serve
from core.serve_guard import Limits
from tests.helpers_llm import build_tiny_model, write_registry

CONTEXT = 40_000
HI = [{"role": "user", "content": "hi"}]
NORMAL_S = 5.0


def post(url: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(url + "/chat/completions", data=data, timeout=kw.pop("timeout", 30),
                         headers={"Content-Type": "application/json", **kw.pop("headers", {})}, **kw)


def assert_serves_normally(url: str) -> None:
    start = time.monotonic()
    r = post(url, {"messages": HI, "max_tokens": 4}, timeout=NORMAL_S)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    assert time.monotonic() - start < NORMAL_S


def raw_request(port: int, body: dict) -> socket.socket:
    """A request on a bare socket, so the test can hang up whenever it wants."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


class Served:
    def __init__(self, app, limits: Limits, server):
        self.app, self.limits, self.server = app, limits, server
        self.port = server.effective_port
        self.url = f"http://127.0.0.1:{self.port}/v1"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from core.api import BackgroundServer

    root = tmp_path_factory.mktemp("abuse-serve")
    folder = build_tiny_model(root / "long-tiny", context=CONTEXT)
    reg = write_registry(root / "registry.yaml", [
        {"name": "tiny", "type": "base", "base_model": str(folder), "access_point": "local/tiny"}])
    limits = Limits(max_tokens=CONTEXT, queue=2, timeout_s=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSFORGE_REGISTRY", str(reg))
        app = serve.make_app("tiny", limits)
        server = serve.create_server(app, threads=6)
        with BackgroundServer(server=server):
            s = Served(app, limits, server)
            assert post(s.url, {"messages": HI, "max_tokens": 1}, timeout=120).status_code == 200  # litellm + model load
            yield s


# ---------------------------------------------------------------- core.serve: refused requests

BAD_BODIES = [
    # (probe, body, status, words that must be in the message)
    ("10,000 messages", {"messages": HI * 10_000, "max_tokens": 1}, 400, "10000 messages; this server accepts at most 512"),
    ("prompt past the context", {"messages": [{"role": "user", "content": "a" * 45_000}], "max_tokens": 1}, 400,
     f"the model's context of {CONTEXT} tokens"),
    ("max_tokens past the context", {"messages": HI, "max_tokens": CONTEXT}, 400, "> the model's context"),
    ("huge seed", {"messages": HI, "seed": 10**30}, 400, "'seed' must be between"),
    ("4,000-digit max_tokens", {"messages": HI, "max_tokens": int("9" * 4000)}, 400, "characters)"),
    ("temperature -1", {"messages": HI, "temperature": -1}, 400, "'temperature' must be between 0 and 2"),
    ("content part with non-string text", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     400, "messages[0].content[0]"),
    ("image content part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "text only"),
    ("bad stream_options", {"messages": HI, "stream": True, "stream_options": "yes"}, 400, "stream_options"),
    ("stream not a boolean", {"messages": HI, "stream": "yes"}, 400, "'stream' must be true or false"),
    ("unknown model", {"messages": HI, "model": "gpt-9"}, 400, "unknown model 'gpt-9'"),
    ("customer path", {"messages": HI, "customer": "../../outside"}, 400, "customer must be a name"),
    ("customer absolute path", {"messages": HI, "customer": "/etc"}, 400, "customer must be a name"),
    ("unknown customer", {"messages": HI, "customer": "nobody"}, 400, "unknown customer 'nobody'"),
]


@pytest.mark.parametrize("probe,body,status,words", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_request_is_refused_with_the_numbers(served, probe, body, status, words):
    start = time.monotonic()
    r = post(served.url, body)
    error = r.json()["error"]
    assert r.status_code == status and words in error["message"], error
    assert len(error["message"]) < 400  # a client's value is never echoed in full
    assert time.monotonic() - start < 5
    assert_serves_normally(served.url)


RAW_BODIES = [
    ("NaN temperature", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "NaN"),
    ("5,000-digit number", b'{"messages": [{"role": "user", "content": "hi"}], "seed": ' + b"9" * 5000 + b"}",
     400, "not valid JSON"),
    ("nesting 100,000 deep", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "nested too deeply"),
    ("not JSON", b"{messages: hi", 400, "not valid JSON"),
    ("9 MB body", b'{"messages": [{"role": "user", "content": "' + b"x" * 9_000_000 + b'"}]}', 413,
     "9000047 bytes; the limit is 1000000"),
]


@pytest.mark.parametrize("probe,data,status,words", RAW_BODIES, ids=[b[0] for b in RAW_BODIES])
def test_malformed_body_is_refused(served, probe, data, status, words):
    r = post(served.url, data)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text[:300]
    assert_serves_normally(served.url)


# ---------------------------------------------------------------- core.serve: the model's queue

LONG = {"messages": HI, "max_tokens": 30_000, "stream": True}  # about 30 s of generation if nobody stops it


def _first_event(sock: socket.socket) -> bytes:
    data = b""
    while b"data: " not in data:
        chunk = sock.recv(4096)
        assert chunk, "server closed the stream"
        data += chunk
    return data


def test_full_queue_answers_503_and_abandoned_streams_free_the_model(served):
    holders = [raw_request(served.port, LONG)]
    try:
        assert b"200 OK" in _first_event(holders[0])  # generating
        holders.append(raw_request(served.port, LONG))  # waiting its turn
        time.sleep(0.3)
        start = time.monotonic()
        r = post(served.url, {"messages": HI, "max_tokens": 4})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "queue limit 2" in r.json()["error"]["message"] and time.monotonic() - start < 2
        health = requests.get(served.url.removesuffix("/v1") + "/health", timeout=2)
        assert health.status_code == 200 and health.json()["queue"]["local"]["admitted"] == 2
    finally:
        for sock in holders:
            sock.close()  # the clients go away: the generation and the wait must both end
    assert _queue_drains(served, within_s=2.0)
    assert_serves_normally(served.url)


def _queue_drains(served: Served, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not requests.get(served.url.removesuffix("/v1") + "/health", timeout=2).json()["queue"]:
            return True
        time.sleep(0.05)
    return False


def test_client_leaving_a_plain_request_stops_its_generation(served):
    sock = raw_request(served.port, {**LONG, "stream": False})
    time.sleep(0.5)
    sock.close()
    assert _queue_drains(served, within_s=2.0)  # without the stop: ~30 s of generation for nobody
    assert_serves_normally(served.url)


def test_deadline_covers_waiting_and_generation(served):
    served.limits.timeout_s = 2.0
    try:
        start = time.monotonic()
        r = post(served.url, {**LONG, "stream": False})
        took = time.monotonic() - start
    finally:
        served.limits.timeout_s = 30
    assert r.status_code == 200 and took < 5
    assert 0 < r.json()["usage"]["completion_tokens"] < 30_000  # stopped at the deadline, kept what it had
    assert_serves_normally(served.url)


def test_bearer_token_when_set(served, monkeypatch):
    monkeypatch.setenv("CSFORGE_SERVE_TOKEN", "t0ken-for-the-test")
    r = post(served.url, {"messages": HI, "max_tokens": 2})
    assert r.status_code == 401 and "bearer token" in r.json()["error"]["message"]
    assert post(served.url, {"messages": HI, "max_tokens": 2},
                headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = post(served.url, {"messages": HI, "max_tokens": 2}, headers={"Authorization": "Bearer t0ken-for-the-test"})
    assert ok.status_code == 200
    assert requests.get(served.url.removesuffix("/v1") + "/health", timeout=2).status_code == 200
    monkeypatch.delenv("CSFORGE_SERVE_TOKEN")
    assert_serves_normally(served.url)


@pytest.mark.parametrize("args,words", [(["--threads", "0"], "at least 1"), (["--queue", "\uff12"], "at least 1"),
                                        (["--timeout", "nan"], "positive number of seconds")])
def test_cli_refuses_bad_settings(capsys, args, words):
    start = time.monotonic()
    with pytest.raises(SystemExit):
        serve.main(["tiny", *args])
    assert words in capsys.readouterr().err and time.monotonic() - start < 5


# ---------------------------------------------------------------- core.api, the data service

SHOP_SRC = '''
from core.dataset import ConversationDataset


class AbuseShop(ConversationDataset):
    """Test customer: every conversation is good."""

    def quality(self, conv):
        return 1.0
'''
SHOP = "abuse_shop"


@pytest.fixture(scope="module")
def data_service(tmp_path_factory):
    """apitest-style customer with one good dataset and a symlink pointing at a file outside its folder."""
    import sys

    import customers
    from core import dataset as data
    from core.api import BackgroundServer, create_app

    root = tmp_path_factory.mktemp("abuse-api")
    cdir, ddir = root / "customers", root / "data"
    (cdir / SHOP).mkdir(parents=True)
    (cdir / SHOP / "__init__.py").write_text("")
    (cdir / SHOP / "dataset.py").write_text(SHOP_SRC, encoding="utf-8")
    (ddir / SHOP).mkdir(parents=True)
    line = {"id": "c1", "messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]}
    (ddir / SHOP / "demo.jsonl").write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    secret = root / "outside.jsonl"
    secret.write_text(json.dumps({**line, "id": "TOP-SECRET"}) + "\n", encoding="utf-8")
    (ddir / SHOP / "leak.jsonl").symlink_to(secret)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CSFORGE_HOME", str(root / "home"))
        mp.setattr(data, "CUSTOMERS_DIR", cdir)
        mp.setattr(data, "DATA_DIR", ddir)
        mp.setattr(customers, "__path__", [str(cdir), *customers.__path__])
        with BackgroundServer(create_app(), threads=4) as srv:
            yield srv.url + "/api/v1"
    for name in [m for m in sys.modules if m.startswith(f"customers.{SHOP}")]:
        del sys.modules[name]


def api_ok(base: str) -> None:
    start = time.monotonic()
    r = requests.get(f"{base}/datasets/{SHOP}/demo/items/0", timeout=NORMAL_S)
    assert r.status_code == 200 and r.json()["id"] == "c1" and time.monotonic() - start < NORMAL_S


API_PROBES = [
    # (probe, path, status, words in the message)
    ("symlink out of the client folder", f"datasets/{SHOP}/leak/items/0", 404, "unknown dataset"),
    ("customer path", "datasets/..%2F..%2Fetc/demo/items/0", 404, ""),
    ("customer with dots", "datasets/../demo/items", 404, ""),
    ("full-width digits", f"datasets/{SHOP}/demo/items/\uff10", 400, "index must be an integer"),
    ("full-width offset", f"datasets/{SHOP}/demo/items?offset=\uff11", 400, "offset must be an integer"),
    ("5,000-digit number", f"datasets/{SHOP}/demo/items?offset=" + "9" * 5000, 400, "(5000 characters)"),
    ("70 KB parameter name", f"datasets/{SHOP}/demo/items?" + "p" * 70_000 + "=1", 400, "(70000 characters)"),
    ("bad customer name", "datasets/" + "x" * 300 + "/demo/items", 400, "(300 characters)"),
]


@pytest.mark.parametrize("probe,path,status,words", API_PROBES, ids=[p[0] for p in API_PROBES])
def test_data_service_refuses_with_short_messages(data_service, probe, path, status, words):
    r = requests.get(f"{data_service}/{path}", timeout=5)
    assert r.status_code == status, r.text[:300]
    assert words in r.json()["message"] and len(r.text) < 1000 and "TOP-SECRET" not in r.text
    api_ok(data_service)


def test_symlinked_file_is_not_listed(data_service):
    listed = requests.get(f"{data_service}/customers", timeout=5).json()["customers"]
    shop = next(c for c in listed if c["name"] == SHOP)
    assert [d["name"] for d in shop["datasets"]] == ["demo"]


def test_500_names_no_server_path(data_service, monkeypatch):
    from core import dataset as data

    def broken(ds):
        raise OSError(f"cannot open {Path(__file__).resolve()}")

    monkeypatch.setattr(data, "visualise", broken)
    r = requests.get(f"{data_service}/datasets/{SHOP}/demo/figures.html", timeout=5)
    assert r.status_code == 500 and "OSError" in r.json()["message"]
    assert str(Path(__file__).parent) not in r.text
    api_ok(data_service)


def test_connection_flood_gets_503_then_service_recovers(data_service):
    port = int(data_service.split(":")[2].split("/")[0])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
    extra = []
    try:
        time.sleep(0.3)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            extra.append(sock)
            sock.sendall(b"GET /api/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer and b"busy" in answer
    finally:
        for sock in idle + extra:
            sock.close()
    time.sleep(0.3)
    api_ok(data_service)


def test_data_service_token(data_service, monkeypatch):
    monkeypatch.setenv("CSFORGE_SERVE_TOKEN", "data-t0ken-123")
    assert requests.get(f"{data_service}/datasets/{SHOP}/demo/items/0", timeout=5).status_code == 401
    r = requests.get(f"{data_service}/datasets/{SHOP}/demo/items/0", timeout=5,
                     headers={"Authorization": "Bearer data-t0ken-123"})
    assert r.status_code == 200
    from core.remote import RemoteDataset  # the torch client sends the token from the same variable

    assert RemoteDataset(data_service.removesuffix("/api/v1"), f"{SHOP}/demo")[0].id == "c1"
    monkeypatch.delenv("CSFORGE_SERVE_TOKEN")
    api_ok(data_service)


def test_data_service_cli_refuses_zero_threads(capsys):
    from core import api

    with pytest.raises(SystemExit):
        api.main(["--threads", "0"])
    assert "at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------- the registry file (core.registry CLI)

@pytest.fixture
def reg_path(tmp_path, monkeypatch):
    path = tmp_path / "registry.yaml"
    monkeypatch.setenv("CSFORGE_REGISTRY", str(path))
    return path


BAD_FILES = [
    ("models is a number", b"models: 5\n", "'models' must be a list of entries, got int"),
    ("top-level scalar", b"just a string\n", "'models' must be a list of entries, got str"),
    ("not UTF-8", "models:\n  - name: caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
    ("duplicate key", b"models:\n  - name: a\n    type: base\n    name: b\n", "key 'name' appears twice"),
    ("alias bomb", b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + b"".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode()
                for p, c in zip("abcdefgh", "bcdefghi")) + b"models: [{name: a, type: base, base_model: x, access_point: local/a, training: {t: *i}}]\n", "alias bomb"),
]


@pytest.mark.parametrize("probe,content,words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_registry_file_is_a_clear_error(reg_path, capsys, probe, content, words):
    from core import registry

    reg_path.write_bytes(content)
    start = time.monotonic()
    for command in (["validate"], ["list"], ["show", "a"]):
        assert registry.main(command) != 0
    out = capsys.readouterr()
    assert words in out.out + out.err and "Traceback" not in out.out + out.err
    assert time.monotonic() - start < 5
    with pytest.raises(registry.RegistryFileError):  # a writer never replaces a file it cannot read
        registry.upsert(registry.Entry(name="n", type="base", base_model="x", access_point="local/n"))
    assert reg_path.read_bytes() == content


def test_missing_registry_file_is_an_error(reg_path, capsys):
    from core import registry

    assert registry.main(["list"]) == 2 and registry.main(["validate"]) == 2
    assert "registry file not found" in capsys.readouterr().err


def test_prompt_model_cycle_is_reported(reg_path, capsys):
    from core import registry

    write_registry(reg_path, [
        {"name": "p1", "type": "prompt", "base_model": "p2", "access_point": "local/p1", "prompt_template": "{question}"},
        {"name": "p2", "type": "prompt", "base_model": "p1", "access_point": "local/p2", "prompt_template": "{question}"},
        {"name": "ok", "type": "base", "base_model": "x", "access_point": "gemini/gemini-2.5-flash"}])
    assert registry.main(["validate"]) == 1
    assert "loop: p1 -> p2 -> p1" in capsys.readouterr().out


def test_writes_keep_the_file_mode(reg_path):
    import os

    from core import registry

    write_registry(reg_path, [])
    os.chmod(reg_path, 0o644)
    registry.upsert(registry.Entry(name="n", type="base", base_model="x", access_point="gemini/gemini-2.5-flash"))
    assert os.stat(reg_path).st_mode & 0o777 == 0o644 and "n" in registry.load().entries


def test_list_reads_the_file_once(reg_path, monkeypatch, capsys):
    from core import registry

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    entries = [{"name": "base", "type": "base", "base_model": "x", "access_point": "gemini/gemini-2.5-flash"}]
    entries += [{"name": f"p{i}", "type": "prompt", "base_model": "base", "access_point": "local/x",
                 "prompt_template": "{question}"} for i in range(300)]
    write_registry(reg_path, entries)
    reads = []
    real = registry._read_raw
    monkeypatch.setattr(registry, "_read_raw", lambda path: reads.append(path) or real(path))
    start = time.monotonic()
    assert registry.main(["list"]) == 0
    assert len(reads) == 1 and time.monotonic() - start < 5
    assert capsys.readouterr().out.count("no: base base: set GEMINI_API_KEY") == 300
