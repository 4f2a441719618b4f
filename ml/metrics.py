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
    """Threshold maximising sensitivity + specificity - 1, placed in the middle of the gap it opens.

    Every threshold in (next lower score, best ROC threshold] gives the same confusion matrix; the ROC threshold
    itself is a score of the data (the lowest positive when validation separates perfectly), so a new case a hair
    lower would flip. The midpoint of the gap, taken in log-odds for probabilities, keeps a margin on both sides.
    Ties between ROC points: the middle of the best run."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    t = float(thr[best[len(best) // 2]])
    if not np.isfinite(t):
        return 0.5
    below = p[p < t]
    if len(below):
        t = _midpoint(float(below.max()), t)
    return float(min(max(t, 1e-6), 1.0))


def _midpoint(a: float, b: float) -> float:
    """Midpoint of a < b: in log-odds when both are probabilities strictly inside (0, 1), else arithmetic."""
    if 0.0 < a < 1.0 and 0.0 < b < 1.0:
        logit = (np.log(a / (1 - a)) + np.log(b / (1 - b))) / 2
        return float(1 / (1 + np.exp(-logit)))
    return (a + b) / 2


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
