"""Metrics shared by training and evaluation (thin wrappers over scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score


def safe_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float | None:
    """ROC AUC, or None when only one class is present."""
    y = np.asarray(y)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p, sample_weight=w))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10, w: np.ndarray | None = None) -> float:
    """Expected calibration error with equal-width bins (weighted mean |observed − predicted|)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    w = np.ones_like(p) if w is None else np.asarray(w, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = w.sum()
    err = 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        wb = w[m].sum()
        err += wb / total * abs(np.average(y[m], weights=w[m]) - np.average(p[m], weights=w[m]))
    return float(err)


def brier(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    return float(brier_score_loss(y, p, sample_weight=w))


def lift_at(y: np.ndarray, p: np.ndarray, top: float = 0.1) -> float | None:
    """Outcome rate in the top ``top`` fraction by score over the base rate."""
    y = np.asarray(y, dtype=float)
    if len(y) == 0 or y.mean() == 0:
        return None
    k = max(1, int(len(y) * top))
    best = np.argsort(-np.asarray(p))[:k]
    return float(y[best].mean() / y.mean())
