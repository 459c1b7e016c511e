"""CSForge core: data, model access, factory, evaluation and pricing.

Importing `core` is cheap: torch, transformers and peft are imported inside the
functions that need them.
"""
