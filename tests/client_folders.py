"""Temporary client folders found by the real customer discovery (core.dataset), for tests."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import pytest

import customers
from core import dataset as data


@contextlib.contextmanager
def client_root(root: Path) -> Iterator[tuple[Path, Path]]:
    """Make root/customers and root/data the places discovery looks first; yields both folders.

    The `customers` package gets root/customers on its path, so `customers.<name>.dataset`
    imports from there; modules imported meanwhile are forgotten afterwards.
    """
    cdir, ddir = root / "customers", root / "data"
    cdir.mkdir(parents=True, exist_ok=True)
    ddir.mkdir(parents=True, exist_ok=True)
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "CUSTOMERS_DIR", cdir)
        mp.setattr(data, "DATA_DIR", ddir)
        mp.setattr(customers, "__path__", [str(cdir), *customers.__path__])
        try:
            yield cdir, ddir
        finally:
            for name in set(sys.modules) - before:
                if name.startswith("customers."):
                    del sys.modules[name]
            data._LOADED.clear()


def write_client(cdir: Path, name: str, source: str) -> Path:
    folder = cdir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / "dataset.py").write_text(source, encoding="utf-8")
    return folder
