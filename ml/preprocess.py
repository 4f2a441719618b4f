"""One preprocessing path for training, evaluation and inference.

Every input (Head CT PNG, CT-ICH JPG, DICOM) becomes one uint8 greyscale slice in the *model window*, is cropped to
the head (largest connected bright component: drops burnt-in letters, borders and padding), resized to a fixed
square without padding, and normalised. Nothing about the source file's size or colour mode survives this.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from ml import dicom as dcm
from ml import slabs
from ml.slabs import SlabPlan

BRAIN_WINDOW = (40, 80)
SUBDURAL_WINDOW = (80, 200)
BONE_WINDOW = (600, 2800)
# The window the shipped model sees. The CT-ICH JPGs (most of the training data) were exported with a brain window of
# about 40/120 (data paper; reproduced on the CT-ICH HU DICOMs in ../shared/data/dicom/ct_ich_hu_slices, where the
# matching patients fit centre 40-42, width 115-150), so DICOM input is windowed the same way.
MODEL_WINDOW = (40, 120)
DEFAULT_SIZE = 128
# ImageNet grey statistics (mean of the RGB means/stds): the encoder's stem was pretrained with them.
NORM_MEAN = 0.449
NORM_STD = 0.226
# Pixels above this (in the model window) count as "head" when looking for the head's bounding box.
HEAD_THRESHOLD = 20

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def apply_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map HU to uint8: center - width/2 -> 0, center + width/2 -> 255, linear in between, clipped."""
    low = center - width / 2.0
    scaled = (np.asarray(hu, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / width)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def window_stack(hu: np.ndarray) -> np.ndarray:
    """Brain, subdural and bone windows as a 3xHxW uint8 stack (for display and multi-window experiments)."""
    return np.stack([apply_window(hu, *w) for w in (BRAIN_WINDOW, SUBDURAL_WINDOW, BONE_WINDOW)])


# How exporters store CT numbers in 16-bit or float pictures: HU itself (signed TIFF, float), HU + 1024 (unsigned
# 16-bit PNG/TIFF, air at about 0) and HU + 32768.
CT_NUMBER_OFFSETS = (0, 1024, 32768)
# The brightest value of a display picture stored with 8, 10, 12 or 16 bits.
DISPLAY_TOPS = (255.0, 1023.0, 4095.0, 65535.0)


def ct_number_offset(values: np.ndarray) -> int | None:
    """The offset o for which `values - o` reads as a head CT slice in HU, or None when none does (a display picture
    saved at a high bit depth). In HU: nothing below -3100 (scanners pad outside the field of view with -2000 to
    -3024), something at 100 or more (skull), air (<= -900) on at least 5 % of the pixels, soft tissue (-100..150) on
    at least 2 %, the median of what is not air at most 100 (a head is mostly soft tissue; 4 to 42 HU on the real
    DICOM slices in the data folder, the skull base -574, against 148 or more for brain-window pictures of them stored
    with 12 bits and read as HU + 1024), and not a display picture's full scale (more than 1 % of the pixels at a
    top value of 255, 1023, 4095 or 65535: a brain or subdural window clips the skull there). Of the offsets that
    fit, the one with the most soft tissue. Known miss: a bone-window picture (500/2000) stored with 12 bits clips
    little and can read as HU + 1024."""
    sample = np.asarray(values, dtype=np.float32)[::4, ::4]
    if not np.isfinite(sample).all():
        return None
    top = float(sample.max())
    if top in DISPLAY_TOPS and (sample >= top).mean() > 0.01:
        return None
    best, best_tissue = None, 0.02
    for offset in CT_NUMBER_OFFSETS:
        hu = sample - offset
        body = hu[hu > -900]
        if hu.min() < -3100 or hu.max() < 100 or body.size > 0.95 * hu.size or float(np.median(body)) > 100:
            continue
        tissue = float(((hu >= -100) & (hu <= 150)).mean())
        if tissue >= best_tissue:
            best, best_tissue = offset, tissue
    return best


def _ct_numbers(arr: np.ndarray, mode: str) -> np.ndarray | None:
    """A high-depth picture's pixels as HU when they hold CT numbers (`ct_number_offset`), else None. An unsigned
    16-bit picture of HU + 1024 written without clipping has its padding (-1500 to -3024 HU: one or two values, where a
    display picture's bright pixels are many) wrapped round to the top of the range: read as the negative values they
    were."""
    readings = [arr]
    wrapped = arr >= 65536 - 3100
    if mode.startswith("I;16") and wrapped.any() and np.unique(arr[wrapped]).size <= 2:
        readings.insert(0, np.where(wrapped, arr - 65536, arr))
    for values in readings:
        offset = ct_number_offset(values)
        if offset is not None:
            return values - offset
    return None


def _image_to_grey(img: Image.Image) -> np.ndarray:
    if img.mode.startswith(("I", "F")):  # one sample of 16/32 bits, integer or float
        arr = np.asarray(img, dtype=np.float32)
        hu = _ct_numbers(arr, img.mode)
        if hu is not None:  # CT numbers: windowed as DICOM is, so the model sees its training window
            return apply_window(hu, *MODEL_WINDOW)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I") and lo >= 0 and hi <= 255:  # an 8-bit picture saved at a higher integer depth
            return arr.astype(np.uint8)
        return np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)  # transparent areas become air (black), like CT background
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _read_bytes(source: str | Path | BinaryIO) -> bytes:
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    source.seek(0)
    return source.read()


def load_slice(source: str | Path | BinaryIO) -> np.ndarray:
    """HxW uint8 greyscale slice in the model window.

    PNG/JPG (any mode; RGB/RGBA -> L) are taken as already windowed; DICOM is converted to HU and windowed with
    MODEL_WINDOW (a brain window matching the training JPGs), and so is a 16-bit or float picture that holds CT
    numbers (`ct_number_offset`: HU, HU + 1024 or HU + 32768); another high-depth picture is stretched from its
    darkest to its brightest pixel. Raises ValueError for unreadable input.
    """
    return _load(source, colour=False)[0]


def read_slice(source: str | Path | BinaryIO) -> tuple[np.ndarray, float]:
    """`load_slice`, and the colour fraction of the source picture (`ml.inputcheck.colour_fraction`; 0 for DICOM),
    which the greyscale slice no longer shows."""
    return _load(source, colour=True)


# How picture formats start: bytes that begin so are a picture, damaged or not, never a DICOM file without preamble.
PICTURE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a", b"BM",
)  # fmt: skip


def _open(data: bytes, name: str = "the file"):
    """A DICOM dataset, or a loaded PIL image (EXIF orientation applied, as a viewer shows it). A DICOM file without
    preamble is the last resort for bytes that are no picture: DicomError (a ValueError) when they are neither. A
    damaged or oversized picture, or one of several pages (a multi-page TIFF), is a ValueError that says so."""
    if dcm.is_dicom_bytes(data[:132]):
        return dcm.read_dataset(io.BytesIO(data))
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{name} is too large a picture for a CT slice ({exc})") from exc
    except Exception as exc:
        if data.startswith(PICTURE_SIGNATURES) or data[8:12] == b"WEBP":
            raise ValueError(f"{name}: the picture cannot be read (damaged or truncated: {exc})") from exc
        return dcm.read_dataset(io.BytesIO(data))
    # MPO (a camera's JPEG with a preview image inside) is one picture: its first frame is the picture itself.
    if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
        frames = image.n_frames
        image.close()
        raise ValueError(f"{name} holds {frames} pictures (pages or frames); give one slice per file")
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a malformed EXIF block: the pixels as stored
        pass
    return image


def _load(source: str | Path | BinaryIO, *, colour: bool) -> tuple[np.ndarray, float]:
    opened = _open(_read_bytes(source), _name(source))
    if not isinstance(opened, Image.Image):
        return dicom_to_slice(opened), 0.0
    with opened:
        if not colour:
            return _image_to_grey(opened), 0.0
        from ml.inputcheck import colour_fraction

        return _image_to_grey(opened), colour_fraction(opened)


def _name(source: str | Path | BinaryIO) -> str:
    """The source's file name for messages."""
    if isinstance(source, (str, Path)):
        return Path(source).name
    return Path(str(getattr(source, "name", "") or "the file")).name


def read_source(source: str | Path | BinaryIO):
    """A DICOM source as its dataset (a series is read whole by `series_slices`), a picture as `load_slice` gives
    it. Raises ValueError for unreadable input."""
    opened = _open(_read_bytes(source), _name(source))
    if not isinstance(opened, Image.Image):
        return opened
    with opened:
        return _image_to_grey(opened)


def series_slices(datasets: Sequence, *, slab_mm: float | None = None) -> tuple[list[np.ndarray], SlabPlan | None]:
    """An ordered DICOM series as the model's input slices, in the model window: slice by slice, or, where the slices
    are much closer than ``slab_mm``, as slabs (`ml.slabs.plan`, given the positions and SliceThickness: each the
    mean in HU of its slices, as a thick reconstruction would be, then windowed). Returns the slices and the plan
    (None: slice by slice)."""
    plan = None
    if slab_mm and len(datasets) > 1:
        plan = slabs.plan(dcm.positions(datasets), slab_mm=slab_mm, thickness_mm=dcm.slice_thickness(datasets))
    if plan is not None and len({(ds.get("Rows"), ds.get("Columns")) for ds in datasets}) > 1:
        plan = None  # slices of different sizes are not one volume to average
    # Each slice's decoded pixels are released once windowed or averaged: only one slab's HU is held at a time.
    if plan is None:
        return [dicom_to_slice(ds) for ds in datasets], None
    return [
        apply_window(slabs.mean_image([dcm.hu_released(datasets[i]) for i in group]), *MODEL_WINDOW)
        for group in plan.averaged
    ], plan


def dicom_to_hu(path: str | Path) -> np.ndarray:
    """A DICOM file's pixels in HU (float32)."""
    return dcm.to_hu(dcm.read_dataset(path))


def dicom_to_slice(ds) -> np.ndarray:
    """DICOM dataset -> HU -> model window, uint8 (the dataset's decoded pixels are not kept: `dcm.hu_released`)."""
    return apply_window(dcm.hu_released(ds), *MODEL_WINDOW)


def _threshold(slice_u8: np.ndarray) -> float:
    # Some Head CT exports have a grey, not black, background: threshold above the border's level.
    border = np.concatenate([slice_u8[0], slice_u8[-1], slice_u8[:, 0], slice_u8[:, -1]])
    return max(HEAD_THRESHOLD, float(np.median(border)) + 15)


def head_mask(slice_u8: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the largest connected bright component (the head), holes filled."""
    mask = slice_u8 > (_threshold(slice_u8) if threshold is None else threshold)
    # Opening detaches thin bridges (table edges, letters touching the frame) before we pick the largest component.
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.ones_like(mask, dtype=bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    largest = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(largest)


def _head_region(slice_u8: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Full-resolution head mask (slightly dilated) and its bounding box, found on a downsampled copy for speed."""
    h, w = slice_u8.shape
    step = max(1, int(max(h, w) // 256))
    small = head_mask(slice_u8[::step, ::step])
    if small.sum() < 0.01 * small.size:
        return np.ones((h, w), bool), (0, h, 0, w)
    small = ndimage.binary_dilation(small, iterations=1)
    full = np.repeat(np.repeat(small, step, 0), step, 1)[:h, :w] if step > 1 else small
    # The box is refined at full resolution (bright pixels inside the coarse head region), so its margin does not
    # depend on the image's resolution: no size cue survives the resize.
    fine = full & (slice_u8 > _threshold(slice_u8))
    if not fine.any():
        fine = full
    rows, cols = np.flatnonzero(fine.any(1)), np.flatnonzero(fine.any(0))
    return full, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def head_bbox(slice_u8: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the head; the whole image when no head is found."""
    return _head_region(slice_u8)[1]


def mask_outside_head(slice_u8: np.ndarray) -> np.ndarray:
    """Zero everything outside the head component (burnt-in letters, rulers, grey backgrounds)."""
    mask, _ = _head_region(slice_u8)
    return np.where(mask, slice_u8, 0).astype(np.uint8)


def crop_resize(slice_u8: np.ndarray, *, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Blank everything outside the head, crop to the head's bounding box and resize that box to size x size
    (no padding, aspect not kept), uint8. Letters, borders, background level and image size leave no trace."""
    if slice_u8.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {slice_u8.shape}")
    mask, (top, bottom, left, right) = _head_region(slice_u8)
    box = np.where(mask, slice_u8, 0)[top:bottom, left:right].astype(np.uint8)
    return np.asarray(Image.fromarray(np.ascontiguousarray(box)).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def normalise(u8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 with the encoder's normalisation."""
    return ((np.asarray(u8, np.float32) / 255.0) - NORM_MEAN) / NORM_STD


def prepare(slice_u8: np.ndarray, *, size: int = DEFAULT_SIZE) -> np.ndarray:
    """The model's input for one slice: crop to the head, resize, normalise -> float32 array 1 x size x size."""
    return normalise(crop_resize(slice_u8, size=size))[None]


def _natural_key(path: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name))


def load_scan(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """One scan from a path: an image, a DICOM file (a multi-frame one gives its frames), or a folder with one series
    (DICOM ordered by geometry, images by natural file-name order). Returns (slices, names in order)."""
    slices, names, _ = read_scan(path, colour=False)
    return slices, names


def read_scan(path: str | Path, *, colour: bool = True) -> tuple[list[np.ndarray], list[str], list[float]]:
    """`load_scan`, and each slice's colour fraction (`read_slice`; 0 for DICOM and when ``colour`` is False)."""
    series = dicom_series(path)
    if series is not None:
        datasets, names = series
        return [dicom_to_slice(ds) for ds in datasets], names, [0.0] * len(datasets)
    path = Path(path)
    if path.is_file():
        u8, fraction = _load(path, colour=colour)
        return [u8], [path.name], [fraction]
    images = [p for p in _folder_files(path) if p.suffix.lower() in IMAGE_SUFFIXES and "_HGE_Seg" not in p.name]
    if images:
        loaded = [_load(p, colour=colour) for p in images]
        return [u8 for u8, _ in loaded], [p.name for p in images], [fraction for _, fraction in loaded]
    raise ValueError(f"{path}: no images or DICOM files found")


def _folder_files(path: Path) -> list[Path]:
    if not path.is_dir():
        raise FileNotFoundError(path)
    return sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)


def dicom_series(path: str | Path) -> tuple[list, list[str]] | None:
    """The ordered DICOM datasets (and slice names) of a DICOM file (a multi-frame one gives its frames) or of a
    folder's DICOM files; None for a picture or a folder without DICOM. Files that are not DICOM are passed over."""
    path = Path(path)
    if path.is_file():
        frames = _dicom_frames(path)
        if not frames:
            return None
        if len(frames) == 1:
            return frames, [path.name]
        order = dcm.sort_datasets(frames)
        return [frames[i] for i in order], [f"{path.name} frame {i + 1}" for i in order]
    datasets, names = [], []
    for p in _folder_files(path):
        frames = _dicom_frames(p)
        if not frames or "PixelData" not in frames[0]:  # not DICOM, or no image (a DICOMDIR, a report)
            continue
        datasets += frames
        names += [p.name] if len(frames) == 1 else [f"{p.name} frame {i + 1}" for i in range(len(frames))]
    if not datasets:
        return None
    series = {str(ds.get("SeriesInstanceUID", "") or "") for ds in datasets}
    if len(series) > 1:
        raise ValueError(f"{path}: holds {len(series)} DICOM series; give one series per folder")
    order = dcm.sort_datasets(datasets)
    return [datasets[i] for i in order], [names[i] for i in order]


def _dicom_frames(path: Path) -> list | None:
    """A DICOM file as single-frame datasets (a multi-frame one split, `ml.dicom.split_frames`); None for a
    picture or a file that is not DICOM. A DICOM file whose frames cannot be split raises (DicomError)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    try:
        ds = dcm.read_dataset(path)
    except dcm.DicomError:
        return None
    try:
        return dcm.split_frames(ds)
    except dcm.DicomError as exc:
        raise type(exc)(f"{path.name}: {exc}") from exc


def load_many(sources: Sequence[str | Path | BinaryIO]) -> list[np.ndarray]:
    return [load_slice(s) for s in sources]
