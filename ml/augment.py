"""Training-time augmentation in torch (affine_grid): rotation, zoom, horizontal flip, mild contrast jitter, and
optionally a narrower display window.

Applied only when `training` is true; evaluation and inference use the plain preprocessed slices.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ml.preprocess import MODEL_WINDOW, NORM_MEAN, NORM_STD

# Display windows drawn by the window augmentation: widths in HU, and levels kept where a brain window is put.
WINDOW_WIDTHS = (40.0, 120.0)
WINDOW_LEVELS = (25.0, 50.0)


def augment_batch(
    x: torch.Tensor,
    *,
    training: bool,
    generator: torch.Generator | None = None,
    max_rotation_deg: float = 15.0,
    zoom: tuple[float, float] = (0.9, 1.1),
    flip_p: float = 0.5,
    contrast: float = 0.1,
    series_length: int = 1,
) -> torch.Tensor:
    """x: N x C x H x W normalised slices. Returns x unchanged when not training.

    One random transform per run of `series_length` consecutive slices: with the slices of a series in a row
    (N = series x series_length) every slice of a series is rotated, zoomed, flipped and jittered alike, as a
    patient lying askew would be; 1 draws a transform per slice."""
    if not training:
        return x
    return augment_with_masks(
        x,
        None,
        generator=generator,
        max_rotation_deg=max_rotation_deg,
        zoom=zoom,
        flip_p=flip_p,
        contrast=contrast,
        series_length=series_length,
    )[0]


def augment_with_masks(
    x: torch.Tensor,
    masks: torch.Tensor | None,
    *,
    generator: torch.Generator | None = None,
    max_rotation_deg: float = 15.0,
    zoom: tuple[float, float] = (0.9, 1.1),
    flip_p: float = 0.5,
    contrast: float = 0.1,
    series_length: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training transform of `augment_batch`, also applied to `masks` (N x 1 x H x W in [0, 1], the
    hemorrhage masks of the slices): each mask is rotated, zoomed and flipped exactly as its slice (no contrast
    jitter), so it still outlines the bleed on the augmented slice. The random draws are the same as
    `augment_batch`'s for the same generator."""
    if x.shape[0] % series_length:
        raise ValueError(f"{x.shape[0]} slices do not split into series of {series_length}")
    n = x.shape[0] // series_length
    opts = {"generator": generator, "device": "cpu"}
    angle = (torch.rand(n, **opts) * 2 - 1) * math.radians(max_rotation_deg)
    scale = torch.empty(n).uniform_(zoom[0], zoom[1], generator=generator)
    flip = torch.where(torch.rand(n, **opts) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta = theta.repeat_interleave(series_length, dim=0).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Out-of-view pixels become the normalised value of black (air), not zero.
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background
    if contrast > 0:
        # Small gain/offset jitter: the JPG exports and the DICOM window differ slightly in level and width.
        gain = 1 + (torch.rand(n, 1, 1, 1, **opts) * 2 - 1) * contrast
        offset = (torch.rand(n, 1, 1, 1, **opts) * 2 - 1) * contrast
        gain = gain.repeat_interleave(series_length, dim=0).to(x.device, x.dtype)
        offset = offset.repeat_interleave(series_length, dim=0).to(x.device, x.dtype)
        out = out * gain + offset
    if masks is not None:
        masks = F.grid_sample(masks.to(x.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, masks


def random_window(
    x: torch.Tensor, p: float, *, n: int, generator: torch.Generator | None = None, series_length: int = 1
) -> torch.Tensor:
    """Show a share p of the n runs of `series_length` slices as if their picture had been exported in another
    display window: width uniform in WINDOW_WIDTHS, level uniform in WINDOW_LEVELS (kept inside the model window,
    whose -20..100 HU is all a picture holds). Exact for a slice in the model window: its pixels are HU clipped to that
    window, so a narrower window is a linear stretch of them clipped to black and white. Uploaded pictures come in
    such windows (brain 40/80, stroke 40/40); DICOM never does, the platform windows it itself."""
    opts = {"generator": generator, "device": "cpu"}
    apply = torch.rand(n, **opts) < p
    centre, width = MODEL_WINDOW
    w = torch.empty(n).uniform_(*WINDOW_WIDTHS, generator=generator)
    low_level = torch.clamp(w / 2 + (centre - width / 2), min=WINDOW_LEVELS[0])
    high_level = torch.clamp(-w / 2 + (centre + width / 2), max=WINDOW_LEVELS[1])
    level = low_level + torch.rand(n, **opts) * (high_level - low_level)
    # In the model window's 0..1 scale: the new window's low end and its width.
    low = (level - w / 2 - (centre - width / 2)) / width
    span = w / width
    low = torch.where(apply, low, torch.zeros_like(low)).repeat_interleave(series_length).view(-1, 1, 1, 1)
    span = torch.where(apply, span, torch.ones_like(span)).repeat_interleave(series_length).view(-1, 1, 1, 1)
    unit = x * NORM_STD + NORM_MEAN
    windowed = ((unit - low.to(x)) / span.to(x)).clamp(0.0, 1.0)
    changed = apply.repeat_interleave(series_length).view(-1, 1, 1, 1).to(x.device)
    return torch.where(changed, (windowed - NORM_MEAN) / NORM_STD, x)
