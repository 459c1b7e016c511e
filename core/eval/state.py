"""Copy-on-write state for tool environments: one shared base, a private overlay per trial.

`State(base)` never changes `base`: a table record (base[name][key]) is deep-copied the first
time a tool takes it with `db[name][key]`; a whole value (a list, a number) on first access.
Iterating a table gives read-only views without copying. During a tool call a journal keeps
each touched record as it was, so the call's leaf diff is cheap and a failing call is undone.
Two states over the same base are compared on the records either one touched.
"""
from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any, Iterator

_MISSING = object()
_FRESH = object()  # journal mark: the record was not copied before this call


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
            _close(table._journal or {}, table._over, table._base, table.view, f"{name}/", rollback, out)
            table._journal = None
        _close(self._vjournal or {}, self._values, self.base, lambda k: self._values.get(k, _MISSING), "",
               rollback, out)
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


def _close(journal: dict, over: dict, base: dict, view, prefix: str, rollback: bool, out: list[dict]) -> None:
    """Undo one journal's writes (rollback) or append their leaf diffs to `out`."""
    for key, saved in journal.items():
        if rollback:
            if saved is _FRESH:
                over.pop(key, None)
            else:
                over[key] = saved
        else:
            before = base.get(key, _MISSING) if saved is _FRESH else saved
            leaf_diff(f"{prefix}{key}", before, view(key), out)
