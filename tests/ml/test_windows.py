"""Pictures exported in another display window (ml.benchmark windows): the re-windowing is exact, in the model's own
window the shipped model scores its CT-ICH test patients exactly as its card says, and the training augmentation that
shows series in narrower windows (ml.augment.random_window) is such an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml import benchmark, paths, preprocess
from ml.augment import random_window
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


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x * preprocess.NORM_STD + preprocess.NORM_MEAN


def test_window_augmentation_is_an_exact_export_in_a_narrower_brain_window_one_per_series():
    hu = np.rint(head_phantom_hu(64, bleed=True))
    picture = preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)
    ramp = np.arange(256, dtype=np.float32).reshape(16, 16) / 255.0  # every grey level, to read the window back
    x = torch.from_numpy(preprocess.normalise(picture))[None, None].repeat(8, 1, 1, 1)
    x[:, :, :16, :16] = torch.from_numpy((ramp - preprocess.NORM_MEAN) / preprocess.NORM_STD)
    out = random_window(x, 1.0, n=4, generator=torch.Generator().manual_seed(3), series_length=2)
    windows = set()
    for i in range(8):
        grey = _unit(out[i, 0, :16, :16]).flatten()
        inside = torch.nonzero((grey > 0) & (grey < 1)).flatten()
        a, b = int(inside[0]), int(inside[-1])
        stretch = float(grey[b] - grey[a]) / ((b - a) / 255.0)
        width = preprocess.MODEL_WINDOW[1] / stretch
        level = -20 + 120 * (a / 255.0 - float(grey[a]) / stretch) + width / 2
        assert 40 - 0.5 <= width <= 120 + 0.5 and 25 - 0.5 <= level <= 50 + 0.5
        windows.add((round(width, 2), round(level, 2)))
        # The rest of the slice is the phantom as exported directly from its HU in that window.
        direct = preprocess.apply_window(hu, level, width).astype(np.float32) / 255.0
        got = _unit(out[i, 0]).numpy()
        assert np.abs(got[16:] - direct[16:]).max() <= 2.5 / 255.0 * stretch
        if i % 2:
            assert torch.equal(out[i], out[i - 1])  # the two slices of a series share their window
    assert len(windows) == 4


def test_window_augmentation_changes_the_asked_share_and_nothing_when_off():
    x = torch.randn(400, 1, 8, 8)
    assert torch.equal(random_window(x, 0.0, n=400, generator=torch.Generator().manual_seed(0)), x)
    out = random_window(x, 0.5, n=400, generator=torch.Generator().manual_seed(0))
    changed = int((out != x).flatten(1).any(dim=1).sum())
    assert 150 <= changed <= 250
    again = random_window(x, 0.5, n=400, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
