"""Pictures exported in another display window (ml.benchmark windows): the re-windowing is exact, and in the model's
own window the shipped model scores its CT-ICH test patients exactly as its card says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import benchmark, paths, preprocess
from tests.phantoms import head_phantom_hu


def test_rewindowing_a_model_window_picture_equals_windowing_the_hu():
    hu = np.rint(head_phantom_hu(128, bleed=True))
    model = preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)
    np.testing.assert_array_equal(benchmark.rewindow(model, preprocess.MODEL_WINDOW), model)
    for window in benchmark.EXPORT_WINDOWS.values():
        direct = preprocess.apply_window(hu, *window).astype(int)
        # One grey level of the 40/120 picture is 0.47 HU: within 2 grey levels of the direct export at width 40.
        assert np.abs(benchmark.rewindow(model, window).astype(int) - direct).max() <= 2


def test_in_its_own_window_the_shipped_model_scores_its_test_patients_as_its_card_says(data_root):
    card = json.loads((paths.default_checkpoint_dir() / "metadata.json").read_text())
    if "ct_ich" not in card.get("splits", {}):
        pytest.skip("the shipped model has no CT-ICH test split")
    result = benchmark.run_windows(data_root, {"model": preprocess.MODEL_WINDOW})["windows"]["model"]
    test = card["metrics"]["test"]["ct_ich"]
    assert result["slice_auc"] == pytest.approx(test["slice"]["auc"], abs=0.005)
    assert result["patient_auc"] == pytest.approx(test["scan"]["auc"], abs=0.005)
    assert result["patients_found"] == test["scan"]["confusion"]["tp"]
