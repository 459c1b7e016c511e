"""CSForge core: data, model access, factory, evaluation and pricing.

Importing `core` is cheap: torch, transformers and peft are imported inside the
functions that need them.
"""

from core.threads import prepare_env as _prepare_env

_prepare_env()  # OpenMP reads its wait policy when torch loads: set it before anything imports torch
