"""Training: split, column roles, candidates behind one protocol, tuning, registry, promotion."""
