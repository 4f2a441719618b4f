"""A seconds-long CPU training run on tiny synthetic data in both layouts: checkpoint + card, Predictor loads it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from ml import evaluate, preprocess
from ml import train as mltrain
from ml.predict import Predictor, ScanResult, overlay_heatmap
from tests.ml.conftest import head_phantom_hu


def _slice(bleed: bool, seed: int, size: int = 96) -> np.ndarray:
    return preprocess.apply_window(head_phantom_hu(size, bleed=bleed, seed=seed), *preprocess.MODEL_WINDOW)


@pytest.fixture()
def synthetic_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HEMO_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    head = root / "head_ct"
    head.mkdir(parents=True)
    with (head / "labels.csv").open("w", newline="") as fh:
        fh.write("id, hemorrhage\n")
        for i in range(14):
            label = int(i < 7)
            Image.fromarray(_slice(bool(label), i)).convert("RGB").save(head / f"{i:03d}.png")
            fh.write(f"{i:03d},{label}\n")
    ich = root / "ct_ich"
    rows = []
    for p in range(1, 8):
        folder = ich / "Patients_CT" / f"{p:03d}" / "brain"
        folder.mkdir(parents=True)
        for s in range(1, 5):
            bleed = p <= 3 and s in (2, 3)
            Image.fromarray(_slice(bleed, 100 * p + s)).save(folder / f"{s}.jpg")
            if bleed:  # masks live beside the slices and must not be read as slices
                Image.fromarray(np.zeros((96, 96), np.uint8)).save(folder / f"{s}_HGE_Seg.jpg")
            rows.append([p, s, 0, int(bleed), 0, 0, 0, int(not bleed), 0])
    with (ich / "hemorrhage_diagnosis.csv").open("w", newline="", encoding="utf-8-sig") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "PatientNumber",
                "SliceNumber",
                "Intraventricular",
                "Intraparenchymal",
                "Subarachnoid",
                "Epidural",
                "Subdural",
                "No_Hemorrhage",
                "Fracture_Yes_No",
            ]
        )
        w.writerows(rows)
    return root


def test_training_smoke_run_writes_a_loadable_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "model"
    argv = [
        "--dataset",
        "both",
        "--data-dir",
        str(synthetic_root),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--encoder",
        "small",
        "--no-pretrained",
        "--size",
        "48",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert mltrain.main(argv) == 0
    for name in ("model.pt", "metadata.json", "curves.png", "roc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["seed"] == 3 and card["command"].startswith("python -m ml.train --dataset both")
    assert set(card["splits"]) == {"head_ct", "ct_ich"}
    for split in card["splits"].values():
        ids = split["train"] + split["val"] + split["test"]
        assert len(ids) == len(set(ids)), "a patient must sit in exactly one split"
    assert 0.0 < card["threshold"] < 1.0
    assert card["metrics"]["test"]["ct_ich"]["n_slices"] > 0
    assert card["torch_version"] and card["input"]["size"] == 48

    predictor = Predictor(out, device="cpu")
    assert predictor.version == card["version"] and predictor.threshold == card["threshold"]
    folder = synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain"
    result = predictor.predict_sources([folder / f"{s}.jpg" for s in range(1, 5)])
    assert isinstance(result, ScanResult)
    assert len(result.slice_probabilities) == 4 and 0 <= result.probability <= 1
    assert result.label == (result.probability >= result.threshold)
    assert len(result.heatmaps) == 4 and result.heatmaps[0].shape == result.images[0].shape == (48, 48)
    assert all(h.dtype == np.float32 and h.min() >= 0 and h.max() <= 1 for h in result.heatmaps)
    assert set(result.timings) == {"load", "inference", "heatmap"}
    assert overlay_heatmap(result.images[1], result.heatmaps[1]).mode == "RGB"
    single = predictor.predict_slices([_slice(True, 99)], heatmaps=False)
    assert len(single.slice_probabilities) == 1 and single.heatmaps == []

    report = evaluate.evaluate(out, synthetic_root, "ct_ich", split="test")
    assert report["n_scans"] == len(card["splits"]["ct_ich"]["test"])
    assert report["scan"]["accuracy"] == pytest.approx(card["metrics"]["test"]["ct_ich"]["scan"]["accuracy"])
