"""Shared fixtures for the ml tests: the real data root (skip with instructions when missing) and phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from ml import paths


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


def head_phantom_hu(size: int = 256, *, bleed: bool = False, seed: int = 0) -> np.ndarray:
    """A synthetic axial head in HU: air, a bone ring (~1000 HU), brain (~35 HU), optional bleed (~70 HU)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = size / 2, size / 2
    r = np.sqrt(((yy - cy) / (0.42 * size)) ** 2 + ((xx - cx) / (0.36 * size)) ** 2)
    hu = np.full((size, size), -1000.0, np.float32)
    hu[r < 1.0] = 1000.0
    hu[r < 0.9] = 35.0
    if bleed:
        b = np.sqrt((yy - cy * 0.8) ** 2 + (xx - cx * 1.2) ** 2) < size * 0.08
        hu[b] = 70.0
    hu[r < 0.9] += rng.normal(0, 3, size=(r < 0.9).sum()).astype(np.float32)
    return hu
