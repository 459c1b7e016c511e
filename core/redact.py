"""Secrets never stored: one function applied to every error, log line, transcript and export.

    from core.redact import redact, redact_obj
    redact("401: Authorization: Bearer sk-abc...")   # -> "401: Authorization: Bearer [REDACTED]"

What is removed: the value of every environment variable of this process whose name ends in
_API_KEY, _TOKEN, _KEY or _SECRET (read at each call, so a key set after start-up is covered),
and strings shaped like credentials whatever their origin: `Bearer <token>`, `sk-...`-style
keys, and the value after an `api_key=` / `"x-api-key": ` / `authorization:` field.
`install_stream_filter()` wraps this process's stdout/stderr so log files written by jobs and
servers go through the same function.
"""
from __future__ import annotations

import io
import os
import re
import sys
import threading
from typing import Any

MARK = "[REDACTED]"
SECRET_VAR = re.compile(r"(_API_KEY|_TOKEN|_KEY|_SECRET)$")
MIN_SECRET = 8  # shorter values ("none", "1") are placeholders, and replacing them would mangle prose
SHAPES = [
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|gsk|xai|sess)-[A-Za-z0-9_-]{12,}"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"),  # Google API keys
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token|authorization)[\"']?\s*[:=]\s*[\"']?)"
               r"(?!\[REDACTED\])[^\s\"',;}]{8,}"),
]


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if SECRET_VAR.search(k.upper()) and len(v) >= MIN_SECRET}
    return sorted(values, key=len, reverse=True)  # a key that contains another goes first


def redact(text: Any, secrets: list[str] | None = None) -> Any:
    """`text` with secrets replaced by [REDACTED]; non-strings are returned unchanged."""
    if not isinstance(text, str) or not text:
        return text
    for secret in _env_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MARK)
    for shape in SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() and m.group(1) else "") + MARK, text)
    return text


def redact_obj(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value (dict, list, str...) with every string redacted, keys included."""
    secrets = _env_secrets() if secrets is None else secrets
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(k, secrets): redact_obj(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v, secrets) for v in value]
    return value


class _RedactingStream(io.TextIOBase):
    """A text stream that redacts whole lines before passing them on (a key is never split)."""

    def __init__(self, inner: Any):
        self.inner, self._buf, self._lock = inner, "", threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            if "\n" in self._buf or "\r" in self._buf or len(self._buf) > 65536:
                cut = max(self._buf.rfind("\n"), self._buf.rfind("\r")) + 1 or len(self._buf)
                out, self._buf = self._buf[:cut], self._buf[cut:]
                self.inner.write(redact(out))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._buf:
                self.inner.write(redact(self._buf))
                self._buf = ""
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


def install_stream_filter() -> None:
    """Redact everything this process prints (job logs, server logs); safe to call twice."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))


def run_python(args: list[str]) -> None:
    """Run `python ARGS` (-m MODULE ... or -c CODE ...) in this process with its output redacted.

    `core.jobs.spawn` starts every job as `python -m core.redact -m core.factory run-job ID`,
    so a job's log file never receives a key, whatever the job prints or a library logs.
    """
    import runpy

    install_stream_filter()
    if len(args) >= 2 and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif len(args) >= 2 and args[0] == "-c":
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit("usage: python -m core.redact -m MODULE [ARGS...] | -c CODE [ARGS...]")


if __name__ == "__main__":
    try:
        run_python(sys.argv[1:])
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
