"""Secrets never stored: redaction rules, and an echoing 401 endpoint on every path that writes."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core import jobs, sandbox, store
from core.redact import MARK, redact, redact_obj

KEY = "sk-test-7c1f9e2b4d6a8f0e1c3b5a7d9f2e4c6b"
TOKEN = "tok_5f3e1d9c7b5a3f1e9d7c5b3a"


def test_redact_env_values_and_credential_shapes(monkeypatch):
    monkeypatch.setenv("ACME_API_KEY", "plainvalue-without-shape-123")
    monkeypatch.setenv("SERVE_TOKEN", "xyz")  # too short to be a secret: left alone
    text = ("failed: plainvalue-without-shape-123 / Authorization: Bearer abc.def-ghi_jkl012 / "
            f"key {KEY} / {{\"x-api-key\": \"{TOKEN}\"}} / xyz / 客服 api_key=中文也不应保留的密钥值")
    out = redact(text)
    for secret in ("plainvalue-without-shape-123", "abc.def-ghi_jkl012", KEY, TOKEN, "中文也不应保留的密钥值"):
        assert secret not in out
    assert "xyz" in out and "客服" in out and out.count(MARK) == 5
    assert redact_obj({"a": [KEY, 3, None], KEY: "ok"}) == {"a": [MARK, 3, None], MARK: "ok"}
    assert redact("no secrets here, 订单 12345678 shipped") == "no secrets here, 订单 12345678 shipped"


def test_sandbox_seq_is_unique_under_concurrent_writers():
    s = sandbox.create_session(["m"])
    errors: list[Exception] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                sandbox.add_message(s.id, "user", f"w{n}-{i}")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = [m.seq for m in sandbox.messages(s.id)]
    assert len(seqs) == 200 and sorted(seqs) == list(range(1, 201))


# ---------------------------------------------------------------- an endpoint that echoes the key

ECHO_KEY = "k3y7c1f9e2b4d6a8f0e1c3b5a7d9"  # no credential shape: only the environment rule can catch it


class EchoingAuthServer:
    """Answers every request with 401 and echoes the Authorization header, raw and with its prefix."""

    def __init__(self) -> None:
        from flask import Flask, jsonify, request

        from tests.helpers_llm import ServerThread

        app = Flask("echo401")

        @app.route("/<path:anything>", methods=["GET", "POST"])
        def echo(anything: str):
            auth = request.headers.get("Authorization", "")
            raw = auth.split(" ", 1)[-1]
            message = f"invalid key {raw} (you sent 'Authorization: {auth}')"
            return jsonify({"error": {"message": message, "type": "invalid_request_error"}}), 401

        self.thread = ServerThread(app)
        self.url = self.thread.url

    def __enter__(self) -> "EchoingAuthServer":
        self.thread.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.__exit__(*exc)


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.fixture
def echo(tmp_path, monkeypatch):
    from tests.helpers_llm import write_registry

    for var in ("CSFORGE_ENDPOINT_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(var, ECHO_KEY)
    with EchoingAuthServer() as server:
        reg = write_registry(tmp_path / "registry.yaml", [
            {"name": "echo", "type": "base", "base_model": "x", "access_point": server.url}])
        monkeypatch.setenv("CSFORGE_REGISTRY", str(reg))
        yield server


def test_echoed_key_is_stored_nowhere(echo, tmp_path, csforge_home):
    import yaml

    from core.eval import store as eval_store
    from core.eval.runner import RunSettings, run
    from core.eval.suite import parse_suite
    from tests.fake_agents import good_agent, serve

    # sandbox: the failed reply's error, then the JSONL export written to a file
    s = sandbox.create_session(["echo"], tester="t")
    reply = sandbox.ask(s.id, "hello", retries=0)[0]
    assert reply.error and "401" in reply.error and MARK in reply.error
    (tmp_path / "export.jsonl").write_text(sandbox.export_jsonl(s.id), encoding="utf-8")

    # eval: the agent fails (error, transcript), and a judge that fails (checks)
    suite = parse_suite(yaml.safe_load("""
name: s
standalone: true
scenarios:
  - id: one
    category: complaint
    turns: [{user: 我要投诉}]
    checks: [{judge: {rubric: apologise}}]
"""), "s.yaml")
    agent_run = run(RunSettings(model=echo.url, timeout_s=10, retries=0, cache=False), suite=suite)
    with serve(good_agent()) as agent:
        judged = run(RunSettings(model=str(agent), judge=echo.url, timeout_s=10, retries=0, cache=False),
                     suite=suite)
    row = eval_store.results(agent_run["id"])[0]
    assert row["error"] and "401" in row["error"]
    judge_check = next(c for c in eval_store.results(judged["id"])[0]["checks"] if c["kind"] == "judge")
    assert "401" in str(judge_check)

    # factory remote tuning, as a background job: jobs.error and the job's log file
    from core import factory
    from tests.helpers_llm import tiny_model_dir

    cfg = factory.make_config({"customer": "shop_zh", "base_model": str(tiny_model_dir()), "name": "rt",
                               "method": "remote", "max_conversations": 10, "val_fraction": 0.2,
                               "remote": {"base_url": echo.url, "poll_interval_s": 0.01}})
    job = jobs.create(factory.KIND, cfg.name, cfg.model_dump(mode="json"))
    proc_pid = jobs.spawn(job, ["-m", "core.factory", "run-job", job.id])
    import os
    import time

    deadline = time.monotonic() + 120
    while jobs.get(job.id).active and time.monotonic() < deadline:
        time.sleep(0.5)
    failed = jobs.get(job.id)
    assert failed.status == "failed" and "401" in failed.error, failed.error
    assert "401" in Path(failed.log_path).read_text(encoding="utf-8")
    assert not jobs.pid_alive(proc_pid) or os.kill(proc_pid, 0) is None

    store.db().conn.close()
    assert _files_holding(tmp_path, ECHO_KEY.encode()) == []


def test_a_foreground_factory_job_logs_no_key(echo, tmp_path, csforge_home):
    """`python -m core.factory train` in the foreground tees its output into the job's log file;
    that file must get the redacted text, like a background job's."""
    import os

    from tests.helpers_llm import tiny_model_dir

    env = {**os.environ, "CSFORGE_HOME": str(csforge_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "core.factory", "train", "--customer", "shop_zh", "--method", "remote",
         "--base-model", str(tiny_model_dir()), "--name", "fg", "--max-conversations", "10",
         "--set", f"remote.base_url={echo.url}", "--set", "remote.poll_interval_s=0.01"],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=300)
    logs = list(csforge_home.glob("jobs/*/log.txt"))
    assert logs, proc.stdout + proc.stderr
    assert any("401" in p.read_text(encoding="utf-8") for p in logs), proc.stdout + proc.stderr
    assert ECHO_KEY not in proc.stdout + proc.stderr
    assert _files_holding(csforge_home, ECHO_KEY.encode()) == []
