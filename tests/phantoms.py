"""Synthetic head CT phantoms shared by the tests (no public data needed): a head in HU, and as a brain-window picture.

They pass `ml.inputcheck` (air around the head, a white skull rim in the brain window, brain-grey inside) at every
size from 16 pixels up, so uploads made of them are analysed, not refused as "not head CT".
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ml import preprocess


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


def head_picture(size: int = 64, *, value: int | None = None) -> np.ndarray:
    """The phantom in the model's brain window (uint8). ``value`` paints a small square of that grey level inside the
    brain, so pictures that must differ (checksums) do, and stay head-like."""
    u8 = preprocess.apply_window(head_phantom_hu(size), *preprocess.MODEL_WINDOW)
    if value is not None:
        c, half = size // 2, max(1, size // 16)
        u8[c - half : c + half, c - half : c + half] = value
    return u8


def head_png(size: int = 64, *, value: int | None = None, mode: str = "L") -> bytes:
    """`head_picture` as PNG bytes (greyscale; ``mode`` "RGB" or "RGBA" for the same grey picture in colour modes)."""
    buffer = io.BytesIO()
    Image.fromarray(head_picture(size, value=value)).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def bone_window_png(size: int = 128) -> bytes:
    """The phantom head in a bone window: a head CT, but not as the model was trained (bone grey, not white), which
    `ml.inputcheck` flags without refusing."""
    buffer = io.BytesIO()
    Image.fromarray(preprocess.apply_window(head_phantom_hu(size), *preprocess.BONE_WINDOW)).save(buffer, format="PNG")
    return buffer.getvalue()
