"""Binary classification metrics and threshold choice (pure numpy + scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def auc(y, p) -> float | None:
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p))


def binary_metrics(y, p, threshold: float) -> dict:
    """AUC, accuracy, sensitivity, specificity, F1 and the confusion matrix at `threshold` (p >= t is positive)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {
        "auc": auc(y, p),
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "sensitivity": sens,
        "specificity": spec,
        "f1": f1,
        "n": int(len(y)),
        "n_positive": int(y.sum()),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "threshold": float(threshold),
    }


def youden_threshold(y, p) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the middle of the best run of thresholds)."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    i = best[len(best) // 2]
    t = float(thr[i])
    return float(min(max(t, 1e-6), 1.0)) if np.isfinite(t) else 0.5


def sensitivity_at_specificity(y, p, specificity: float = 0.90) -> float | None:
    """Best sensitivity among thresholds whose specificity is at least `specificity` (operating-point check)."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    ok = (1 - fpr) >= specificity
    return float(tpr[ok].max()) if ok.any() else 0.0


def summary(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": len(values),
        "values": [float(v) for v in values],
    }
