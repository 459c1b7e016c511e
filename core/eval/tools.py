"""Tool environments: a client's typed Python functions over a JSON state, offered as OpenAI tools.

A client may have `customers/<name>/tools.py`:

    from core.eval.tools import ToolError, tool

    def load_state() -> dict: ...                 # the initial JSON state (or STATE_FILE = "state.json")

    @tool("read")                                 # read | write | generic
    def get_order(db, order_id: str) -> dict:
        \"\"\"Look up an order.

        Args:
            order_id: The order number, such as '202405170001'.
        \"\"\"
        return db["orders"][order_id]             # KeyError / ToolError -> an error the agent sees

The OpenAI schema of every tool is derived from its signature (types, defaults) and its
docstring (summary, `Args:` lines); nothing is written by hand. Optional module attributes
describe the client's protocol, checked on task transcripts (core/eval/tasks.py):
AUTH_TOOLS (calls whose result identifies the customer), `owner(db, name, args)` (whose data
a call touches), CONFIRM_WRITES (a write needs the customer's explicit yes first),
HANDOFF_TOOLS (calls that end the conversation with a human taking over).

State is copy-on-write per table record: `State(base)` never changes `base`, so one loaded
JSON serves every scenario and trial in parallel; a record is copied the first time a tool
takes it with `db[table][key]`. Tools must write through that access (iterating a table
gives read-only views by contract). Every call is recorded with its arguments, result or
error and the state diff it caused; a call that raises changes nothing.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
import time
import types
import typing
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from core.paths import CUSTOMERS_DIR

KINDS = ("read", "write", "generic")
_MISSING = object()
_FRESH = object()  # journal mark: the record was not copied before this call


class ToolError(Exception):
    """A tool refusing a call; the message goes back to the agent as the tool result."""


class EnvironmentMissing(Exception):
    """The client's state data is not on this machine (e.g. ../shared/data absent)."""


def tool(kind: str = "read") -> Callable:
    """Mark a function as a tool of kind read, write or generic."""
    if kind not in KINDS:
        raise ValueError(f"tool kind must be one of {KINDS}, not {kind!r}")

    def mark(fn: Callable) -> Callable:
        fn.__tool_kind__ = kind
        return fn
    return mark


# ---------------------------------------------------------------- copy-on-write state

class Table(MutableMapping):
    """One table (dict of records) over a shared base; records are copied on first access."""

    def __init__(self, base: dict, journal: dict | None = None) -> None:
        self._base = base
        self._over: dict = {}  # key -> record copy, or _MISSING for a deleted key
        self._journal = journal  # during a call: key -> the record before it, or _FRESH

    def _save(self, key: Any) -> None:
        if self._journal is not None and key not in self._journal:
            self._journal[key] = copy.deepcopy(self._over[key]) if key in self._over else _FRESH

    def __getitem__(self, key: Any) -> Any:
        self._save(key)
        if key in self._over:
            value = self._over[key]
            if value is _MISSING:
                raise KeyError(key)
            return value
        value = self._base[key]
        if isinstance(value, (dict, list)):
            value = copy.deepcopy(value)
            self._over[key] = value
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self._save(key)
        self._over[key] = value

    def __delitem__(self, key: Any) -> None:
        self[key]  # KeyError when absent
        self._over[key] = _MISSING

    def __contains__(self, key: object) -> bool:
        if key in self._over:
            return self._over[key] is not _MISSING
        return key in self._base

    def __iter__(self) -> Iterator:
        for key in self._base:
            if self._over.get(key, None) is not _MISSING:
                yield key
        for key, value in self._over.items():
            if key not in self._base and value is not _MISSING:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def view(self, key: Any) -> Any:
        """The current record without copying it (read only)."""
        value = self._over.get(key, _MISSING) if key in self._over else self._base.get(key, _MISSING)
        return value

    def values(self):  # read-only views: no copy per record
        return [self.view(k) for k in self]

    def items(self):
        return [(k, self.view(k)) for k in self]

    def touched(self) -> set:
        return set(self._over)


class State:
    """The state of one scenario or trial: tables over a shared base, plus whole values."""

    def __init__(self, base: dict) -> None:
        self.base = base
        self._tables: dict[str, Table] = {}
        self._values: dict[str, Any] = {}
        self._vjournal: dict | None = None  # during a call: value name -> value before, or _FRESH

    def __getitem__(self, name: str) -> Any:
        if name in self._tables:
            return self._tables[name]
        if name in self._values:
            self._save(name)
            return self._values[name]
        value = self.base[name]
        if isinstance(value, dict):
            self._tables[name] = Table(value, {} if self._vjournal is not None else None)
            return self._tables[name]
        self._save(name)
        self._values[name] = copy.deepcopy(value)
        return self._values[name]

    def _save(self, name: str) -> None:
        if self._vjournal is not None and name not in self._vjournal:
            self._vjournal[name] = copy.deepcopy(self._values[name]) if name in self._values else _FRESH

    def __setitem__(self, name: str, value: Any) -> None:
        self._save(name)
        self._tables.pop(name, None)
        self._values[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self._values or name in self._tables or name in self.base

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def keys(self) -> list[str]:
        return list(dict.fromkeys([*self.base, *self._values]))

    def apply(self, patch: dict | None) -> "State":
        """Overlay a task's initial-state patch: {table: {key: record}} or {name: value}."""
        for name, value in (patch or {}).items():
            if isinstance(value, dict) and isinstance(self.base.get(name), dict):
                table = self[name]
                for key, record in value.items():
                    table[key] = copy.deepcopy(record)
            else:
                self[name] = copy.deepcopy(value)
        return self

    def begin(self) -> None:
        """Start journaling: what the next call changes can be diffed and undone."""
        self._vjournal = {}
        for table in self._tables.values():
            table._journal = {}

    def end(self, rollback: bool = False) -> list[dict]:
        """Stop journaling; undo the call's changes or return its leaf diff."""
        out: list[dict] = []
        for name, table in self._tables.items():
            for key, saved in (table._journal or {}).items():
                if rollback:
                    if saved is _FRESH:
                        table._over.pop(key, None)
                    else:
                        table._over[key] = saved
                else:
                    before = table._base.get(key, _MISSING) if saved is _FRESH else saved
                    leaf_diff(f"{name}/{key}", before, table.view(key), out)
            table._journal = None
        for name, saved in (self._vjournal or {}).items():
            if rollback:
                if saved is _FRESH:
                    self._values.pop(name, None)
                else:
                    self._values[name] = saved
            else:
                before = self.base.get(name, _MISSING) if saved is _FRESH else saved
                leaf_diff(name, before, self._values.get(name, _MISSING), out)
        self._vjournal = None
        return out

    def lookup(self, name: str, key: Any = _MISSING) -> Any:
        """Current value of a table record or a whole value, without copying; _MISSING if absent."""
        if key is _MISSING:
            if name in self._values:
                return self._values[name]
            return self.base.get(name, _MISSING)
        if name in self._tables:
            return self._tables[name].view(key)
        base = self.base.get(name)
        return base.get(key, _MISSING) if isinstance(base, dict) else _MISSING

    def touched(self) -> list[tuple[str, Any]]:
        """(name, key) of every record taken, and (name, _MISSING) for replaced whole values."""
        keys = [(n, k) for n, t in self._tables.items() for k in t.touched()]
        return keys + [(n, _MISSING) for n in self._values]

    def changes(self) -> list[dict]:
        """Leaf-level differences from the base: [{path, before, after}]."""
        return self.diff_against(State(self.base))

    def diff_against(self, other: "State") -> list[dict]:
        """Leaf-level differences other -> self (both over the same base)."""
        out: list[dict] = []
        for name, key in sorted(set(self.touched()) | set(other.touched()), key=lambda nk: (nk[0], str(nk[1]))):
            before, after = other.lookup(name, key), self.lookup(name, key)
            path = name if key is _MISSING else f"{name}/{key}"
            leaf_diff(path, before, after, out)
        return out

    def same_as(self, other: "State") -> bool:
        """True when both states hold the same values (they must share a base)."""
        for name, key in set(self.touched()) | set(other.touched()):
            if self.lookup(name, key) != other.lookup(name, key):
                return False
        return True

    def materialize(self) -> dict:
        """The whole state as plain JSON (copies everything: for small states and display)."""
        out = {}
        for name in self.keys():
            value = self[name]
            out[name] = {k: copy.deepcopy(v) for k, v in value.items()} if isinstance(value, Table) \
                else copy.deepcopy(value)
        return out


def leaf_diff(path: str, before: Any, after: Any, out: list[dict]) -> None:
    """Append {path, before, after} for every leaf that differs (None stands for absent)."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in dict.fromkeys([*before, *after]):
            leaf_diff(f"{path}/{key}", before.get(key, _MISSING), after.get(key, _MISSING), out)
        return
    out.append({"path": path, "before": None if before is _MISSING else before,
                "after": None if after is _MISSING else after})


# ---------------------------------------------------------------- schemas from signatures

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_type(annotation: Any) -> dict:
    """JSON schema of a Python annotation (str, int, float, bool, list[...], dict, Literal, Optional)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if origin is typing.Literal:
        return {"type": _SCALARS.get(type(args[0]), "string"), "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return json_type(rest[0]) if len(rest) == 1 else {"anyOf": [json_type(a) for a in rest]}
    if annotation is list or origin is list:
        return {"type": "array", "items": json_type(args[0]) if args else {}}
    if annotation is dict or origin is dict:
        return {"type": "object"}
    raise TypeError(f"unsupported parameter type {annotation!r}")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {param: description}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    summary, params, current, section = [], {}, None, None
    for line in doc.splitlines():
        stripped = line.strip()
        header = re.fullmatch(r"(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?):", stripped)
        if header:
            section, current = header.group(1), None
            continue
        if section is None:
            summary.append(stripped)
        elif section in ("Args", "Arguments", "Parameters"):
            m = re.match(r"^(\w+)\s*(\([^)]*\))?:\s*(.*)$", stripped)
            if m and line.startswith((" " * 4, "\t")) and not line.startswith((" " * 8, "\t\t")):
                current = m.group(1)
                params[current] = m.group(3)
            elif current and stripped:
                params[current] += " " + stripped
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(summary)).strip()
    return text, params


@dataclass
class Tool:
    name: str
    kind: str
    fn: Callable
    schema: dict
    params: dict[str, inspect.Parameter]
    hints: dict[str, Any]


def make_tool(fn: Callable) -> Tool:
    """A Tool with its OpenAI schema derived from the function's signature and docstring."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = list(sig.parameters.values())[1:]  # the first parameter is the state
    description, docs = parse_docstring(fn.__doc__)
    props, required = {}, []
    for p in params:
        if p.name not in hints:
            raise TypeError(f"tool {fn.__name__}: parameter '{p.name}' has no type annotation")
        if p.name not in docs:
            raise TypeError(f"tool {fn.__name__}: parameter '{p.name}' is not described under Args:")
        props[p.name] = {**json_type(hints[p.name]), "description": docs[p.name]}
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
        else:
            props[p.name]["default"] = p.default
    if not description:
        raise TypeError(f"tool {fn.__name__}: the docstring must say what it does")
    schema = {"type": "function", "function": {
        "name": fn.__name__, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required}}}
    return Tool(fn.__name__, fn.__tool_kind__, fn, schema, {p.name: p for p in params}, hints)


# ---------------------------------------------------------------- a client's environment

@dataclass
class Environment:
    """A client's tools, protocol settings and base state (loaded once, shared read-only)."""

    customer: str
    module: Any
    tools: dict[str, Tool]
    base: dict

    @property
    def schemas(self) -> list[dict]:
        return [t.schema for t in self.tools.values()]

    def attr(self, name: str, default: Any = None) -> Any:
        return getattr(self.module, name, default)

    def new_state(self, patch: dict | None = None) -> State:
        return State(self.base).apply(patch)

    def session(self, patch: dict | None = None) -> "ToolSession":
        return ToolSession(self, self.new_state(patch))


def tools_module(customer: str) -> Any | None:
    """customers/<customer>/tools.py, imported; None when the client has none."""
    if not customer or not (CUSTOMERS_DIR / customer / "tools.py").exists():
        return None
    return importlib.import_module(f"customers.{customer}.tools")


def has_tools(customer: str | None) -> bool:
    return bool(customer) and (CUSTOMERS_DIR / customer / "tools.py").exists()


@lru_cache(maxsize=8)
def load_environment(customer: str) -> Environment:
    """The client's environment; EnvironmentMissing when its state data is absent."""
    module = tools_module(customer)
    if module is None:
        raise KeyError(f"customer '{customer}' has no tools.py (customers/{customer}/tools.py)")
    found = {name: make_tool(fn) for name, fn in vars(module).items()
             if callable(fn) and hasattr(fn, "__tool_kind__")}
    if hasattr(module, "load_state"):
        base = module.load_state()
    else:
        path = Path(module.__file__).parent / getattr(module, "STATE_FILE", "state.json")
        if not path.exists():
            raise EnvironmentMissing(f"{customer}: state file {path} not found")
        base = json.loads(path.read_text(encoding="utf-8"))
    return Environment(customer, module, dict(sorted(found.items())), base)


# ---------------------------------------------------------------- executing calls

@dataclass
class ToolSession:
    """One scenario's or trial's tools over its own state; records every call."""

    env: Environment
    state: State
    calls: list[dict] = field(default_factory=list)

    def call(self, name: str, arguments: Any, call_id: str | None = None) -> dict:
        """Run one call; errors come back as the result text with error=True, never raise."""
        start = time.perf_counter()
        rec = {"id": call_id or f"call_{len(self.calls)}", "name": name, "kind": None, "arguments": arguments,
               "result": None, "error": False, "diff": []}
        tool_ = self.env.tools.get(name)
        try:
            if tool_ is None:
                raise ToolError(f"unknown tool '{name}'; tools: {', '.join(self.env.tools)}")
            rec["kind"] = tool_.kind
            args = self._arguments(tool_, arguments)
            rec["arguments"] = args
            self.state.begin()
            try:
                value = tool_.fn(self.state, **args)
            except Exception:
                self.state.end(rollback=True)  # a failing call changes nothing
                raise
            rec["diff"] = self.state.end()
            rec["result"] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        except Exception as exc:
            rec["error"] = True
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            why = f"not found: {message}" if isinstance(exc, KeyError) else str(message)
            rec["result"] = f"Error: {why}"
        rec["ms"] = round(1000 * (time.perf_counter() - start), 3)
        self.calls.append(rec)
        return rec

    @staticmethod
    def _arguments(tool_: Tool, arguments: Any) -> dict:
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError as exc:
                raise ToolError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise ToolError("arguments must be a JSON object")
        unknown = sorted(set(arguments) - set(tool_.params))
        if unknown:
            raise ToolError(f"unknown argument(s) {', '.join(unknown)} for {tool_.name}")
        missing = [n for n, p in tool_.params.items() if p.default is inspect.Parameter.empty and n not in arguments]
        if missing:
            raise ToolError(f"missing argument(s) {', '.join(missing)} for {tool_.name}")
        for name, value in arguments.items():
            want = json_type(tool_.hints[name]).get("type")
            if not _fits(value, want):
                raise ToolError(f"argument '{name}' of {tool_.name} must be {want}, got {type(value).__name__}")
        return dict(arguments)

    def changes(self) -> list[dict]:
        return self.state.changes()


def _fits(value: Any, want: str | None) -> bool:
    checks = {"string": lambda v: isinstance(v, str), "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool), "array": lambda v: isinstance(v, list),
              "object": lambda v: isinstance(v, dict)}
    return want not in checks or checks[want](value)
