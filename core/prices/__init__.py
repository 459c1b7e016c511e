"""Prices: the curated price files and the modules under core.pricing (which re-exports their public names).

rows (price YAML) → costmap (LiteLLM's map) → tokens (dataset token profiles) → costs (arithmetic, Prices)
→ cheapest → readme → daily (the scheduled job and its change log, CHANGES.md + state.json). None of them
imports core.pricing; core.retirement (dates and replacements) sits beside them and imports only rows and costmap.
"""
