"""Reading thin-slice series as slabs of the thickness the model was trained on.

The sequence model learnt from CT-ICH series of 5 mm slices (about 30 per head). A modern scanner also exports thin
reconstructions (0.625-1.25 mm, 120-250 slices per head). Fed slice by slice, such a series is another input: the
recurrent layers see a head spread over five to eight times as many steps, and the `max_slice` pooling takes the
maximum over five to eight times as many slices. On the 20 held-out CT-ICH patients of the shipped split, each 5 mm
slice repeated five times (the longer sequence alone) raised the series probabilities by 0.26 on average and turned
6 of 20 labels (`python -m ml.benchmark density`, bench/results/density.json).

So a DICOM series whose slices are much closer than ``SLAB_MM`` is read as consecutive slabs of about ``SLAB_MM``:
the mean in HU of the slices in each slab (what a scanner's thick reconstruction of the same data gives), windowed
like any DICOM slice. Each slice then takes its slab's probability and heat map. No slab is thicker than
``MAX_SLAB_MM`` (on thicker slices the model misses more bleeds: `ml.inputcheck.THICK_SLICE_MM`), and where slices
overlap (thicker than their spacing) only as many central slices of a slab are averaged as cover ``SLAB_MM``. A
series more than 3 mm apart (two slices would make a slab over 6 mm), pictures without positions and single slices
are read as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# CT-ICH, the only series the model trained on, has 5 mm slices (Hssayeni et al., Data 2020).
SLAB_MM = 5.0
# No slab thicker than this: 1.2 x SLAB_MM, the thickness above which ml.inputcheck flags slices.
MAX_SLAB_MM = 6.0
# The model card's words for it (``input.slabs``).
SLAB_NOTE = (
    "DICOM series with slices 3 mm apart or closer are read as consecutive slabs of round(slab_mm / spacing) slices "
    "(at most 6 mm of them); each slab is the mean in HU of its slices (of its central ones, as many as cover "
    "slab_mm, where the slices overlap), then the window; each slice gets its slab's probability and heat map; a "
    "series read as one slab is judged at the single-image threshold"
)


@dataclass(frozen=True)
class SlabPlan:
    """How an ordered series is read: slab j covers the slices ``groups[j]`` and is the mean of ``averaged[j]``
    (all of them, or the central ones for overlapping slices)."""

    groups: list[list[int]]
    averaged: list[list[int]]
    spacing_mm: float
    slices_per_slab: int
    slab_mm: float
    thickness_mm: float | None = None

    overlap: bool = False  # slices thicker than their spacing: only the central ones of each slab are averaged

    def to_dict(self) -> dict:
        return {
            "slab_mm": self.slab_mm,
            "spacing_mm": round(self.spacing_mm, 4),
            "slices_per_slab": self.slices_per_slab,
            "averaged_per_slab": max(len(a) for a in self.averaged),
            "thickness_mm": self.thickness_mm,
            "overlap": self.overlap,
            "slabs": len(self.groups),
            "slices": sum(len(g) for g in self.groups),
        }

    def expand(self, per_slab: Sequence) -> list:
        """Per-slab values (probabilities, heat maps, images) repeated for each slice of the slab, in slice order."""
        if len(per_slab) != len(self.groups):
            raise ValueError(f"{len(per_slab)} values for {len(self.groups)} slabs")
        out: list = [None] * sum(len(g) for g in self.groups)
        for value, group in zip(per_slab, self.groups, strict=True):
            for index in group:
                out[index] = value
        return out


def plan(
    positions: Sequence[float | None], *, slab_mm: float = SLAB_MM, thickness_mm: float | None = None
) -> SlabPlan | None:
    """Slabs for slices at ``positions`` (mm along the slice normal, in series order), or None to read slice by slice.

    None when a position is missing, when positions repeat or are not in order (not one ordered series), or when
    two slices would already span more than ``MAX_SLAB_MM`` (spacing over 3 mm). Otherwise ``slices_per_slab`` is
    ``slab_mm / spacing`` rounded half up, but no more than fit in ``MAX_SLAB_MM``, and slice i goes to slab
    ``round(|p_i - p_0| / spacing) // slices_per_slab``, so an uneven gap moves slices by position, not by count;
    empty slabs (gaps) are skipped. A last slab with fewer than half the slices of the others joins the one before
    it when that one is its neighbour (not across a gap), so no slab is much noisier than the rest. With
    ``thickness_mm`` (SliceThickness) above the spacing, each slab averages only its
    ``round((slab_mm - thickness) / spacing) + 1`` central slices, which together cover about ``slab_mm``.
    """
    if len(positions) < 2 or any(p is None for p in positions):
        return None
    p = np.asarray(positions, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        return None
    steps = np.diff(p)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        return None
    spacing = float(np.median(np.abs(steps)))
    per_slab = min(int(np.floor(slab_mm / spacing + 0.5)), int(np.floor(MAX_SLAB_MM / spacing + 1e-9)))
    if per_slab <= 1:
        return None
    nominal = np.rint(np.abs(p - p[0]) / spacing).astype(np.int64)
    slab_of = nominal // per_slab
    numbers = [int(n) for n in np.unique(slab_of)]
    groups = [[int(i) for i in np.flatnonzero(slab_of == n)] for n in numbers]
    if len(groups) > 1 and 2 * len(groups[-1]) < per_slab and numbers[-1] == numbers[-2] + 1:
        groups[-2].extend(groups.pop())
    averaged, overlap = groups, thickness_mm is not None and thickness_mm > 1.05 * spacing
    if overlap:
        covering = max(1, min(per_slab, int(round((slab_mm - thickness_mm) / spacing)) + 1))
        averaged = [g[(len(g) - m) // 2 : (len(g) - m) // 2 + m] for g in groups for m in [min(covering, len(g))]]
    return SlabPlan(
        groups=groups,
        averaged=averaged,
        spacing_mm=spacing,
        slices_per_slab=per_slab,
        slab_mm=slab_mm,
        thickness_mm=thickness_mm,
        overlap=overlap,
    )


def mean_image(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of one slab's slices (float32); they must share one shape."""
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"slices of different sizes in one slab: {sorted(shapes)}")
    return np.mean([np.asarray(a, np.float32) for a in arrays], axis=0, dtype=np.float32)


def describe(reading: dict) -> str:
    """One sentence for people on how a series was read (``SlabPlan.to_dict``), or "" when slice by slice."""
    if not reading:
        return ""
    slabs, slices = reading["slabs"], reading["slices"]
    per, averaged = reading["slices_per_slab"], reading.get("averaged_per_slab", reading["slices_per_slab"])
    how = f"{per} per slab, averaged in HU"
    if reading.get("overlap") and reading.get("thickness_mm") is not None:
        how = (
            f"{per} per slab; the slices are {reading['thickness_mm']:g} mm thick and overlap, so only the central "
            f"{averaged} of each slab {'is' if averaged == 1 else 'are'} read"
        )
    text = (
        f"{slabs} slab{'' if slabs == 1 else 's'} of up to {reading['slab_mm']:g} mm, the slice thickness the model "
        f"was trained on: the {slices} slices are {reading['spacing_mm']:g} mm apart ({how}). Each slice shows its "
        "slab's probability and heat map."
    )
    if slabs == 1:
        text += " A single slab is judged like a single image, at the image threshold."
    return text
