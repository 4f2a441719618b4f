"""Metric arithmetic on hand-made scores: the validation threshold and the operating-point check."""

from __future__ import annotations

import numpy as np
import pytest

from ml import metrics


def test_youden_threshold_sits_in_the_middle_of_the_gap_not_on_a_score():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.02, 0.05, 0.10, 0.40, 0.70, 0.90]
    t = metrics.youden_threshold(y, p)
    assert 0.10 < t < 0.40 and t not in p
    assert t == pytest.approx(1 / (1 + np.sqrt((0.9 / 0.1) * (0.6 / 0.4))))  # log-odds midpoint of 0.10 and 0.40
    m = metrics.binary_metrics(y, p, t)
    assert m["sensitivity"] == m["specificity"] == 1.0


def test_youden_threshold_with_overlap_keeps_the_best_operating_point():
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8, 0.9]
    t = metrics.youden_threshold(y, p)
    m = metrics.binary_metrics(y, p, t)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(0.75)
    assert t not in p


def test_youden_threshold_of_one_class_is_one_half():
    assert metrics.youden_threshold([1, 1, 1], [0.2, 0.3, 0.4]) == 0.5


def test_sensitivity_at_specificity():
    y = [0] * 10 + [1] * 4
    p = [i / 100 for i in range(10)] + [0.095, 0.5, 0.6, 0.7]
    assert metrics.sensitivity_at_specificity(y, p, 0.90) == 1.0
    p[0] = 0.99  # one clean scan scores highest: at specificity 0.9 the threshold must pass it
    assert metrics.sensitivity_at_specificity(y, p, 0.90) == 1.0
    p[1] = 0.98  # two: specificity 0.9 now needs a threshold above both
    assert metrics.sensitivity_at_specificity(y, p, 0.90) == 0.0
