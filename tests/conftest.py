"""Shared test set-up: every test gets its own $CSFORGE_HOME; nothing reaches the network."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
TWITTER_DEV = SHARED_DATA / "ibm_twitter_care" / "dev.json"


@pytest.fixture(autouse=True)
def csforge_home(tmp_path, monkeypatch) -> Path:
    """A fresh runtime folder (SQLite, caches, adapters) for each test."""
    home = tmp_path / "csforge_home"
    monkeypatch.setenv("CSFORGE_HOME", str(home))
    return home


@pytest.fixture
def twitter_dev() -> Path:
    if not TWITTER_DEV.exists():
        pytest.skip(f"real test data not found at {TWITTER_DEV} (it ships in ../shared/data beside the repo)")
    return TWITTER_DEV
