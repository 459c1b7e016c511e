"""The Conversation contract and raw-record reading: types, validation, JSON safety. No torch here.

core.dataset builds datasets on these; core.remote serves the same Sample and RecordError types
over HTTP. Every way a single record can be bad ends as a RecordError naming file, line (or list
index) and reason; nothing here raises on bad input.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROLES = ("system", "user", "assistant", "tool")
MAX_REASON = 300  # a reason quoting a 1 MB string would bloat every error listing
BOM = b"\xef\xbb\xbf"
# One reusable encoder, no circular-reference bookkeeping (a cycle ends in RecursionError, caught):
# ~30% cheaper than json.dumps for the check every record gets at load.
_STRICT_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False)


@dataclass
class Conversation:
    """The canonical form every customer class produces."""

    id: str
    messages: list[dict]  # OpenAI chat roles: system, user, assistant, tool; each with "content"
    context: dict = field(default_factory=dict)  # tools called + results, user profile, images, scripts
    meta: dict = field(default_factory=dict)  # source file, timestamps, anything else


@dataclass(frozen=True)
class Sample:
    """What `ds[i]` returns: the dialog, its cached label and intervention index, and its context."""

    id: str
    dialog: list[dict]
    label: float
    human_intervention_idx: int
    context: dict


@dataclass(frozen=True)
class RecordError:
    """A raw record that could not become a Conversation."""

    file: str
    where: str  # "line 12" (jsonl), "index 3" (json list) or "file"
    reason: str

    def __post_init__(self) -> None:  # the reason may quote the record: keep it short and valid UTF-8
        object.__setattr__(self, "reason", printable(self.reason))

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.reason}"


class BadRecord(ValueError):
    """Raised in strict mode on the first bad record; the message names file, record and reason."""


class UnknownName(KeyError):
    """A customer or dataset name that does not exist; the message lists what does."""

    def __str__(self) -> str:
        return str(self.args[0])


def printable(text: Any, limit: int = MAX_REASON) -> str:
    """`text` as valid UTF-8 (lone surrogates escaped), cut to `limit` characters."""
    text = str(text)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text):,} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# ---- validation -------------------------------------------------------------------------------------
def validate(conv: Conversation) -> None:
    """Raise ValueError(reason) unless `conv` follows the contract (README, "The Conversation contract")."""
    if not isinstance(conv, Conversation):
        raise ValueError(f"parse() returned a {type(conv).__name__}, expected a Conversation")
    if not isinstance(conv.messages, list):
        raise ValueError("'messages' is not a list")
    if not any(isinstance(m, dict) and m.get("role") != "system" for m in conv.messages):
        raise ValueError("empty conversation: no user or agent message")
    for n, msg in enumerate(conv.messages):
        if not isinstance(msg, dict):
            raise ValueError(f"message {n} is a {type(msg).__name__}, expected an object")
        if msg.get("role") not in ROLES:
            raise ValueError(f"message {n} has unknown role {msg.get('role')!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(msg.get("content"), str):
            kind = "missing" if "content" not in msg else f"a {type(msg['content']).__name__}"
            raise ValueError(f"message {n} content is {kind}, expected text")
    if not isinstance(conv.context, dict):
        raise ValueError("'context' is not an object")


def check_json(value: Any, name: str) -> None:
    """Raise ValueError naming the place unless `value` encodes as strict JSON in UTF-8.

    Catches what json.loads lets through but a server cannot send: NaN and Infinity (1e999
    reads as inf), lone surrogates (from "\\ud800" escapes), and objects a client's code put in
    (datetime, set, bytes).
    """
    try:
        _STRICT_JSON.encode(value).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError) as exc:
        raise ValueError(_json_problem(value, name) or f"{name}: not valid JSON ({type(exc).__name__})") from None


def _json_problem(value: Any, name: str, max_depth: int = 500) -> str | None:
    """Where and why `value` is not strict JSON (iterative, so deep nesting cannot overflow)."""
    stack = [(value, name, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > max_depth:
            return f"{name}: nested deeper than {max_depth} levels"
        if isinstance(node, float) and not math.isfinite(node):
            return f"{path}: {node} is not a valid JSON number"
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{path}: lone surrogate {node[exc.start]!r} is not valid Unicode text"
        elif isinstance(node, dict):
            for key, item in node.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    return f"{path}: key {key!r} is a {type(key).__name__}, not text"
                stack.append((key, f"{path} (key)", depth + 1))
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))
        elif not isinstance(node, (int, float, bool)) and node is not None:
            return f"{path}: a {type(node).__name__} is not JSON"
    return None


# ---- reading files ------------------------------------------------------------------------------------
def loads(data: bytes, where: str, path: Path) -> Any:
    """One JSON document, or a RecordError saying why it is not one."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return RecordError(str(path), where, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except json.JSONDecodeError as exc:
        return RecordError(str(path), where, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                           if where == "file" else f"invalid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return RecordError(str(path), where, "invalid JSON: nested too deeply to read")
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        return RecordError(str(path), where, f"invalid JSON: {exc}")


def jsonl_records(path: Path) -> Iterator[tuple[str, int, int, Any]]:
    """(where, byte offset, length, record or RecordError) per non-blank line; the file is streamed.

    A UTF-8 byte-order mark before the first line is skipped (offset and length exclude it), so
    random access by offset reads the same bytes.
    """
    offset = 0
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            start, offset = offset, offset + len(line)
            if lineno == 1 and line.startswith(BOM):
                start, line = start + len(BOM), line[len(BOM):]
            if not line.strip():
                continue
            where = f"line {lineno}"
            yield where, start, len(line), loads(line, where, path)


def json_list(path: Path) -> list | RecordError:
    """A .json file holding a list of records, or the RecordError of the whole file."""
    data = path.read_bytes()
    records = loads(data[len(BOM):] if data.startswith(BOM) else data, "file", path)
    if isinstance(records, RecordError) or isinstance(records, list):
        return records
    return RecordError(str(path), "file", f"expected a JSON list of conversations, got {type(records).__name__}")
