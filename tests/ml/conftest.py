"""Shared fixtures for the ml tests: the real data root (skip with instructions when missing) and phantoms."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from ml import paths, preprocess
from tests.phantoms import head_phantom_hu


@pytest.fixture(scope="session")
def data_root():
    try:
        return paths.data_dir(required=True)
    except paths.DataNotFound as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def dicom_root(data_root):
    folder = data_root / "dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} missing. {paths.HOW_TO_GET_DATA}")
    return folder


def phantom_bleed_mask(size: int = 256) -> np.ndarray:
    """The hemorrhage mask of `head_phantom_hu(size, bleed=True)` as CT-ICH draws it: 255 on the bleed, 0 elsewhere."""
    yy, xx = np.mgrid[:size, :size]
    disk = np.sqrt((yy - size / 2 * 0.8) ** 2 + (xx - size / 2 * 1.2) ** 2) < size * 0.08
    return np.where(disk, 255, 0).astype(np.uint8)


# A phantom slice already in the model window, as the released CT-ICH JPGs are.
def phantom_slice(bleed: bool, seed: int, size: int = 96) -> np.ndarray:
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
            Image.fromarray(phantom_slice(bool(label), i)).convert("RGB").save(head / f"{i:03d}.png")
            fh.write(f"{i:03d},{label}\n")
    ich = root / "ct_ich"
    rows = []
    for p in range(1, 8):
        folder = ich / "Patients_CT" / f"{p:03d}" / "brain"
        folder.mkdir(parents=True)
        for s in range(1, 5):
            bleed = p <= 3 and s in (2, 3)
            Image.fromarray(phantom_slice(bleed, 100 * p + s)).save(folder / f"{s}.jpg")
            if bleed:  # masks live beside the slices and must not be read as slices
                Image.fromarray(phantom_bleed_mask(96)).save(folder / f"{s}_HGE_Seg.jpg")
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
