"""Does an input look like a head CT slice in a brain window? A model-independent check, run before the model.

Why: the model scores anything it is given, and its features cannot tell a photograph from a CT slice. The shipped
ensemble calls a photo of a cat 0.74, a brick wall 0.94 and a blank frame 1.00, "hemorrhage suspected" (`python -m
ml.benchmark inputcheck` measures this). An exploration of its pooled encoder features (PCA of 16-64 components fitted
on the training slices; not part of the benchmark) found none of scikit-image's sample pictures beyond the 99.5th
percentile of the validation slices in Mahalanobis distance or PCA residual, where about 1 % of the real CT-ICH
validation slices are. So the check looks at the image itself, with properties every brain-window head CT slice has:

- ``colour``: CT is greyscale. A photo or a coloured rendering has pixels whose colour is not explained by one tint
  of the grey level (a tinted film scan, as some Head CT images are, is).
- ``no_head``: one head-sized bright object stands out from the background; not nothing, not the whole frame.
- ``no_background``: air surrounds the head: the image border is a flat, uniform level, not texture.
- ``no_skull``: in a brain window bone is white, so the head's outer rim holds near-white pixels. A bone window
  (brain and bone both grey) or a non-CT picture has none.
- ``no_brain``: inside the skull most pixels have the mid-grey of brain tissue in a brain window.

The thresholds were set on the data folder (all 200 Head CT images, every CT-ICH slice, every DICOM file) and on
scikit-image's sample pictures, with margin: no real slice is "not head CT" and 18 of 2021 CT-ICH slices and 2 of 55
DICOM files (skull base and vertex) are "unusual" (`docs/RESULTS.md`, "Input check"); the tightest margin is the
flat border (lowest Head CT image 0.197 against 0.15). A slice that fails one property is "unusual" (a skull-base
slice, an odd window, a tight crop); one that fails two, or is in colour, is "not head CT". A scan is refused when
most of its slices are not head CT, and flagged when many of them are unusual. The verdict never changes the model's
output: the platform refuses the upload, or shows the warning beside the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from ml import preprocess
from ml.slabs import MAX_SLAB_MM

# Stored with every verdict. 2: series with a third or more of DICOM slices thicker than THICK_SLICE_MM are flagged.
VERSION = 2
# Images are checked at about this many pixels on their long side (speed; every threshold was measured there).
CHECK_SIZE = 256
# Tint-removed chroma above this (0-255 scale) makes a pixel "coloured"; more than COLOUR_FRACTION of them, a colour
# picture. Real Head CT, tinted film scans included, stays at or below 0.013.
CHROMA_LEVEL = 30
COLOUR_FRACTION = 0.05
# The head object: at least this fraction of the image, touching at most this fraction of the image border.
MIN_HEAD_FRACTION = 0.02
MAX_BORDER_TOUCH = 0.6
# Border pixels within BORDER_TOLERANCE grey levels of the border's median: at least this fraction (real: >= 0.19).
MIN_UNIFORM_BORDER = 0.15
BORDER_TOLERANCE = 12
# Skull rim: the outer RIM_DEPTH of the head (as a fraction of its size); at least MIN_SKULL of it >= SKULL_LEVEL.
RIM_DEPTH = 0.04
SKULL_LEVEL = 200
MIN_SKULL = 0.03
# Brain: deeper than 3 rim depths inside the head, at least MIN_BRAIN of the pixels in [BRAIN_LOW, BRAIN_HIGH).
BRAIN_LOW, BRAIN_HIGH = 60, 200
MIN_BRAIN = 0.15
# A scan is refused when more than this fraction of its slices are not head CT, and flagged when at least
# UNUSUAL_SCAN of them are unusual.
REFUSE_SCAN = 0.5
UNUSUAL_SCAN = 1 / 3
# DICOM slices thicker than this (SliceThickness, mm) are flagged (a scan where at least UNUSUAL_SCAN of its slices
# are): the model learnt from 5 mm slices, and thicker ones average a small bleed with the brain around it. Pairs of
# held-out 5 mm CT-ICH slices averaged in HU into 10 mm ones (as a scanner would) lowered the series probabilities
# by 0.06 on average and 3 of 8 bleeding patients were missed (0 at 5 mm; `python -m ml.benchmark density`; an
# earlier simulation averaged the windowed JPGs and drew a blood-grey rim at the skull, which over-called). 6 mm:
# 1.2 x the training thickness, not fitted to either result; ml.slabs never builds a slab thicker either.
THICK_SLICE_MM = MAX_SLAB_MM
# A long series is judged on at most this many slices, evenly spaced (the verdict is a fraction of them; about 19 ms
# a 512 x 512 slice on one CPU core).
MAX_CHECKED_SLICES = 64

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")

REASONS = {
    "colour": "it is a colour picture, and CT slices are greyscale",
    "no_head": "no head-sized object stands out from the background",
    "no_background": "its border is not the flat dark air that surrounds a head on CT",
    "no_skull": "it has no white skull rim, as a head CT in a brain window has (another window, or not a head CT?)",
    "no_brain": "little inside the head has the grey of brain tissue in a brain window",
}


@dataclass(frozen=True)
class SliceCheck:
    """The properties one slice lacks (keys of REASONS, in that order) and the measures behind them."""

    failed: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def unusual(self) -> bool:
        return bool(self.failed)

    @property
    def not_head_ct(self) -> bool:
        return "colour" in self.failed or len(self.failed) >= 2


@dataclass(frozen=True)
class ScanCheck:
    """A scan's verdict: "ok", "warn" (shown beside the result) or "refuse" (not analysed)."""

    verdict: str
    message: str
    slices: int  # slices checked
    total: int  # slices of the scan (more than checked for a long series: `slices_to_check`)
    unusual: int
    not_head_ct: int
    failed: dict[str, int]  # how many slices lack each property
    thick_slices: int = 0  # DICOM slices whose SliceThickness is over THICK_SLICE_MM
    max_slice_thickness_mm: float | None = None  # the largest SliceThickness stated, where any is

    def to_dict(self) -> dict:
        return {"version": VERSION, **asdict(self)}


def colour_fraction(image: Image.Image) -> float:
    """Fraction of pixels whose colour one tint of the grey level does not explain (0 for any greyscale mode).

    The picture is composited on black first, as `ml.preprocess` does before the model sees it, so colour hidden
    in transparent pixels does not count. Each channel is then fitted as a + b * grey (least squares), so a
    uniformly tinted film scan leaves no residual; what stays is colour that varies independently of brightness, as
    in photographs and colour overlays."""
    if image.mode in GREY_MODES:
        return 0.0
    rgba = np.asarray(image.convert("RGBA"))
    step = max(1, max(rgba.shape[:2]) // CHECK_SIZE)
    sample = rgba[::step, ::step].reshape(-1, 4).astype(np.float32)
    pixels = sample[:, :3] * (sample[:, 3:] / 255.0)
    grey = pixels.mean(1, keepdims=True)
    design = np.hstack([grey, np.ones_like(grey)])
    coef, *_ = np.linalg.lstsq(design, pixels, rcond=None)
    residual = pixels - design @ coef
    return float(((residual.max(1) - residual.min(1)) > CHROMA_LEVEL).mean())


def measure(slice_u8: np.ndarray, *, colour: float = 0.0) -> dict[str, float]:
    """The measures behind the check, for one uint8 slice in the model window (ml.preprocess.load_slice)."""
    u8 = np.asarray(slice_u8, np.uint8)
    if u8.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {u8.shape}")
    step = max(1, max(u8.shape) // CHECK_SIZE)
    small = u8[::step, ::step]
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]]).astype(np.int16)
    uniform = float((np.abs(border - np.median(border)) <= BORDER_TOLERANCE).mean())
    head = preprocess.head_mask(small)
    touch = float(np.concatenate([head[0], head[-1], head[:, 0], head[:, -1]]).mean())
    skull = brain = 0.0
    if head.any() and not head.all():
        rows, cols = np.flatnonzero(head.any(1)), np.flatnonzero(head.any(0))
        depth = max(2.0, RIM_DEPTH * max(rows[-1] - rows[0], cols[-1] - cols[0]))
        inside = ndimage.distance_transform_edt(head)
        rim = head & (inside <= depth)
        skull = float((small[rim] >= SKULL_LEVEL).mean())
        core = small[inside > 3 * depth]
        if core.size == 0:
            core = small[head]
        brain = float(((core >= BRAIN_LOW) & (core < BRAIN_HIGH)).mean())
    return {
        "colour": round(float(colour), 4),
        "head_fraction": round(float(head.mean()), 4),
        "border_touch": round(touch, 4),
        "uniform_border": round(uniform, 4),
        "skull": round(skull, 4),
        "brain": round(brain, 4),
    }


def failed_properties(m: dict[str, float]) -> tuple[str, ...]:
    """The properties (keys of REASONS) that the measures of one slice fail."""
    failed = []
    if m["colour"] > COLOUR_FRACTION:
        failed.append("colour")
    if m["head_fraction"] < MIN_HEAD_FRACTION or m["border_touch"] > MAX_BORDER_TOUCH:
        failed.append("no_head")
    if m["uniform_border"] < MIN_UNIFORM_BORDER:
        failed.append("no_background")
    if m["skull"] < MIN_SKULL:
        failed.append("no_skull")
    if m["brain"] < MIN_BRAIN:
        failed.append("no_brain")
    return tuple(failed)


def check_slice(slice_u8: np.ndarray, *, colour: float = 0.0) -> SliceCheck:
    """Check one uint8 slice in the model window; ``colour`` is the source image's colour_fraction (0 for DICOM)."""
    m = measure(slice_u8, colour=colour)
    return SliceCheck(failed_properties(m), m)


def slices_to_check(total: int) -> list[int]:
    """The indices of the slices of a ``total``-slice scan to check: all of them up to MAX_CHECKED_SLICES, else that
    many evenly spaced from the first to the last."""
    if total <= MAX_CHECKED_SLICES:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, MAX_CHECKED_SLICES).round()})


def check_scan(
    checks: list[SliceCheck], *, total: int | None = None, slice_thicknesses: Sequence[float | None] = ()
) -> ScanCheck:
    """The verdict for a scan from its slices' checks (a single image is a scan of one slice; ``total``: the scan's
    slices when only `slices_to_check` of them were checked). The message names the properties that the slices
    behind the verdict lack, most frequent first. ``slice_thicknesses``: every DICOM slice's SliceThickness (None
    where not stated); when at least UNUSUAL_SCAN of them are over THICK_SLICE_MM, a scan that is not refused gets
    a "warn" that says so."""
    if not checks:
        raise ValueError("a scan needs at least one slice")
    n = len(checks)
    total = max(n, total or n)
    of = (
        f"of the {n} slices of this series" if total == n else f"of the {n} slices checked in this {total}-slice series"
    )
    unusual = [c for c in checks if c.unusual]
    not_ct = [c for c in checks if c.not_head_ct]
    if len(not_ct) > REFUSE_SCAN * n:
        what = "This image does not" if total == 1 else f"{len(not_ct)} {of} do not"
        verdict, message = "refuse", f"{what} look like a head CT slice: {_reasons(not_ct)}."
    elif unusual and (total == 1 or len(unusual) >= UNUSUAL_SCAN * n):
        what = "This image looks" if total == 1 else f"{len(unusual)} {of} look"
        verdict = "warn"
        message = (
            f"{what} unlike the brain-window head CT slices the model was trained on: {_reasons(unusual)}. "
            "Read the probability with caution."
        )
    else:
        verdict, message = "ok", ""
    stated = [float(t) for t in slice_thicknesses if t is not None and t > 0]
    thick = sorted(t for t in stated if t > THICK_SLICE_MM)
    if verdict != "refuse" and thick and len(thick) >= UNUSUAL_SCAN * len(slice_thicknesses):
        n_stated = len(slice_thicknesses)
        if n_stated == 1:
            which = "The slice is"
        elif len(thick) == n_stated:
            which = "The slices are"
        else:
            which = f"{len(thick)} of the {n_stated} slices {'is' if len(thick) == 1 else 'are'}"
        size = f"{thick[0]:g}" if thick[0] == thick[-1] else f"{thick[0]:g}-{thick[-1]:g}"
        note = (
            f"{which} {size} mm thick; the model learnt from 5 mm slices and misses more bleeds on thicker ones, "
            "where a small bleed is averaged with the brain around it. Read a negative result with caution."
        )
        verdict, message = "warn", f"{message} {note}" if message else note
    return ScanCheck(
        verdict,
        message,
        n,
        total,
        len(unusual),
        len(not_ct),
        _counts(checks),
        thick_slices=len(thick),
        max_slice_thickness_mm=max(stated) if stated else None,
    )


def _counts(checks: list[SliceCheck]) -> dict[str, int]:
    counts = {key: sum(key in c.failed for c in checks) for key in REASONS}
    return {key: count for key, count in counts.items() if count}


def _reasons(checks: list[SliceCheck]) -> str:
    counts = _counts(checks)
    return "; ".join(REASONS[key] for key in sorted(counts, key=lambda key: -counts[key]))
