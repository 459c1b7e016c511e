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

State is copy-on-write per table record (core/eval/state.py): one loaded JSON serves every
scenario and trial in parallel. Tools must write through `db[table][key]` (iterating a table
gives read-only views by contract). Every call is recorded with its arguments, result or
error and the state diff it caused; a call that raises changes nothing.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import time
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from core.eval.state import State, Table, leaf_diff  # noqa: F401  (re-exported)
from core.paths import CUSTOMERS_DIR

KINDS = ("read", "write", "generic")


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


def has_tools(customer: str | None) -> bool:
    return bool(customer) and (CUSTOMERS_DIR / customer / "tools.py").exists()


def tools_module(customer: str) -> Any | None:
    """customers/<customer>/tools.py, imported; None when the client has none."""
    return importlib.import_module(f"customers.{customer}.tools") if has_tools(customer) else None


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
        props = tool_.schema["function"]["parameters"]["properties"]  # derived once, in make_tool
        for name, value in arguments.items():
            want = props[name].get("type")
            if not _fits(value, want):
                raise ToolError(f"argument '{name}' of {tool_.name} must be {want}, got {type(value).__name__}")
        return dict(arguments)

    def changes(self) -> list[dict]:
        return self.state.changes()


_FITS = {"string": lambda v: isinstance(v, str),
         "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
         "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
         "boolean": lambda v: isinstance(v, bool), "array": lambda v: isinstance(v, list),
         "object": lambda v: isinstance(v, dict)}


def _fits(value: Any, want: str | None) -> bool:
    return want not in _FITS or _FITS[want](value)
