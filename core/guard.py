"""What both HTTP servers (core.serve, core.api) share to refuse abuse: names, tokens, clipping.

- `check_name(kind, value, known)`: a customer, dataset or model named in a request must be an
  identifier (letters, digits, `_ . -`, not starting with a dot) and one of the known names, so
  no request can make a server open a path of its choosing.
- `TokenGate`: WSGI middleware; when $CSFORGE_SERVE_TOKEN is set every request except the
  listed open paths needs `Authorization: Bearer <token>` (401 otherwise).
- `positive(text)`: the argparse type of both servers' counts (--threads, --queue, ...).
- `clip(value)`: what an error message may echo back of a client's value (80 characters).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import re
from typing import Any, Callable, Iterable

TOKEN_VAR = "CSFORGE_SERVE_TOKEN"
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z", re.ASCII)
POSITIVE = re.compile(r"[0-9]{1,18}\Z", re.ASCII)  # 18 digits: past any count, and int() stays cheap
ECHO_CHARS = 80  # a client's value quoted in an error: enough to recognise it, never the whole body


class BadName(ValueError):
    """A name in a request that is not an identifier or not a known one; the message says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def clip(value: Any, limit: int = ECHO_CHARS) -> str:
    """repr() of a client's value, cut to `limit` characters with the original length named."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}… ({len(text)} characters)"


def check_shape(kind: str, value: Any) -> str:
    """`value` if it is an identifier (never a path); BadName 400 otherwise."""
    if not isinstance(value, str) or not NAME.match(value):
        raise BadName(f"{kind} must be a name (letters, digits, '_', '.', '-'), got {clip(value)}", 400)
    return value


def check_name(kind: str, value: Any, known: Iterable[str]) -> str:
    """`value` if it is a known identifier; BadName (400 bad shape, 404 unknown) otherwise."""
    check_shape(kind, value)
    names = sorted(known)
    if value not in names:
        raise BadName(f"unknown {kind} {clip(value)}; known: {', '.join(names) or 'none'}", 404)
    return value


def positive(text: str) -> int:
    """argparse type: a whole number of at least 1 in ASCII digits (int() also takes full-width ones)."""
    import argparse

    if not POSITIVE.match(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {clip(text)}")
    return int(text)


def token() -> str | None:
    return os.environ.get(TOKEN_VAR) or None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warning(host: str) -> str | None:
    """A line to print when a server listens beyond this machine without a token."""
    if is_loopback(host) or token():
        return None
    return (f"warning: listening on {host} without a token: anyone who can reach this port can use it; "
            f"set {TOKEN_VAR} (clients send 'Authorization: Bearer <token>')")


class TokenGate:
    """WSGI middleware: a bearer token on every request (but `open_paths`) when $CSFORGE_SERVE_TOKEN is set."""

    def __init__(self, app: Callable, render: Callable[[int, str], bytes], open_paths: tuple[str, ...] = ()):
        self.app, self.render, self.open_paths = app, render, open_paths

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        expected = token()
        if expected and environ.get("PATH_INFO", "") not in self.open_paths:
            sent = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, given = sent.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
                body = self.render(401, f"missing or wrong bearer token (this server requires {TOKEN_VAR})")
                start_response("401 Unauthorized", [("Content-Type", "application/json; charset=utf-8"),
                                                    ("Content-Length", str(len(body))),
                                                    ("WWW-Authenticate", "Bearer")])
                return [body]
        return self.app(environ, start_response)


def create_server(app: Callable, *, host: str, port: int, threads: int, busy: bytes,
                  max_connections: int = 100, max_queued: int | None = None, **adjustments: Any) -> Any:
    """A waitress server that answers 503 + Retry-After at once when it is full.

    Plain waitress stops accepting at its connection limit, so client 101 waits unanswered in
    the listen backlog. Here a new connection past `max_connections` open ones, or arriving
    while `max_queued` requests already wait for a worker thread, gets `busy` (a JSON body)
    with status 503 and is closed.
    """
    import socket

    from waitress.channel import HTTPChannel
    from waitress.server import create_server as waitress_server

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    max_queued = threads * 8 if max_queued is None else max_queued
    server = waitress_server(app, host=host, port=port, threads=threads,
                             connection_limit=max_connections + 64, **adjustments)
    accept = server.handle_accept
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Content-Length: {len(busy)}\r\nConnection: close\r\n\r\n").encode()

    def handle_accept() -> None:
        channels = sum(isinstance(c, HTTPChannel) for c in list(server._map.values()))
        if channels < max_connections and len(server.task_dispatcher.queue) < max_queued:
            return accept()
        try:
            conn, _ = server.accept() or (None, None)
        except OSError:
            return None
        if conn is None:
            return None
        try:
            conn.settimeout(0.2)  # a fresh socket's send buffer takes the short answer at once
            conn.sendall(head + busy)
            conn.shutdown(socket.SHUT_WR)
            conn.setblocking(False)
            conn.recv(65536)  # what of the request arrived already: unread data would reset the answer away
        except OSError:
            pass
        finally:
            conn.close()
        return None

    server.handle_accept = handle_accept
    return server
