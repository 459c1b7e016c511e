"""Price data (YAML, research notes) and the helpers of core.pricing: token profiles, README tables."""
