"""Where things live: the repository, customer folders, and runtime state ($CSFORGE_HOME)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS_DIR = ROOT / "customers"
DATA_DIR = ROOT / "data"


def home() -> Path:
    """Runtime state folder (SQLite, adapters, caches, reports); created on first use."""
    path = Path(os.environ.get("CSFORGE_HOME", ROOT / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def home_dir(*parts: str) -> Path:
    """A sub-folder of $CSFORGE_HOME, created on first use."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def registry_path() -> Path:
    """registry.yaml in use; $CSFORGE_REGISTRY overrides it (tests point it at a temp copy)."""
    return Path(os.environ.get("CSFORGE_REGISTRY", ROOT / "registry.yaml"))
