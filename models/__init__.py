"""Estimators that learn from features: booking/arrival scorer, stage model, reply suggestions (pool, retrieval, ranking, compliance guard)."""
