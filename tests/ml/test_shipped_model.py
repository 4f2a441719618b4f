"""The shipped default model: loadable, small, scores real DICOM, and never worse than its card claims."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import paths
from ml.evaluate import evaluate
from ml.predict import Predictor

TOLERANCE = 0.02
MODEL_DIR = paths.default_checkpoint_dir()


@pytest.fixture(scope="module")
def card():
    if not (MODEL_DIR / "model.pt").is_file():
        pytest.skip(f"no shipped model at {MODEL_DIR}; train one with python -m ml.train --dataset both ...")
    return json.loads((MODEL_DIR / "metadata.json").read_text())


@pytest.fixture(scope="module")
def predictor(card):
    return Predictor(device="cpu")


def test_artifacts_are_complete_and_small(card):
    for name in ("model.pt", "metadata.json", "curves.png", "roc.png"):
        assert (MODEL_DIR / name).is_file()
    assert sum(f.stat().st_size for f in MODEL_DIR.iterdir()) < 20 * 1024 * 1024, "the folder's budget: 20 MB"
    assert set(card["splits"]) == {"head_ct", "ct_ich"}, "the default model is trained with --dataset both"
    # One model's training command, or each ensemble member's (joined by `python -m ml.ensemble`).
    members = card.get("ensemble", {}).get("members", [])
    assert len(members) == card["architecture"].get("members", 1) if members else "members" not in card["architecture"]
    for command in [m["command"] for m in members] or [card["command"]]:
        assert command.startswith("python -m ml.train") and "--dataset both" in command
    assert card["training"]["train_minutes"] > 0


@pytest.mark.parametrize("layout", ["head_ct", "ct_ich"])
def test_test_split_metrics_are_no_worse_than_the_card(card, data_root, layout):
    claimed = card["metrics"]["test"][layout]
    got = evaluate(MODEL_DIR, data_root, layout, split="test", device="cpu")
    assert got["n_scans"] == claimed["n_scans"]
    for level in ("scan", "slice"):
        if level not in claimed:
            continue
        for key in ("auc", "accuracy", "sensitivity", "specificity"):
            if claimed[level][key] is None:
                continue
            assert got[level][key] >= claimed[level][key] - TOLERANCE, f"{layout} {level} {key}: card overstates"


def test_predictor_scores_a_real_dicom_series(predictor, dicom_root):
    from ml import dicom

    files = sorted((dicom_root / "ge_head_series").glob("*.dcm"))[::-1]
    order = dicom.sort_datasets([dicom.read_dataset(f, stop_before_pixels=True) for f in files])
    result = predictor.predict_sources([files[i] for i in order])
    assert len(result.slice_probabilities) == 28 and len(result.heatmaps) == 28
    assert 0.0 <= result.probability <= 1.0
    assert all(h.shape == result.images[0].shape for h in result.heatmaps)
    assert np.isfinite(result.slice_probabilities).all()
