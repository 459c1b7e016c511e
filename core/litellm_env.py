"""LiteLLM imported the way CSForge wants it: no cost-map fetch, no telemetry, no debug banner.

core.llm (calls) and core.registry (key checks) both import litellm through here, so the
registry never needs core.llm and the settings live in one place.
"""
from __future__ import annotations

import os
from typing import Any


def import_litellm() -> Any:
    """litellm (about 6 s on first import), set up to stay offline and quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm
