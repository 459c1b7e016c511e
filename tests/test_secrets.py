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
