"""The DICOM and image facts other apps need, over ``ml.dicom`` / ``ml.preprocess`` / ``ml.inputcheck`` (the only
door from Django to ``ml`` besides the predictor). Nothing here imports torch.

Policy for non-CT modalities (used by ingestion and by ``python -m ml.predict``, in ``ml.dicom.ct_rejection_reason``):
Modality CT is accepted when its pixels reach air (min <= -500 HU: else they are not HU). A Secondary Capture
(Modality OT/SC or missing) is accepted only when it holds CT Hounsfield units: one 16-bit sample per pixel, signed or
rescaled (``ml.dicom.is_ct_like``), and pixel values that span air and tissue (min <= -500 HU, max >= 0 HU). Every
other modality (MR, US, CR, ...) is refused.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset

from ml import dicom as ml_dicom
from ml import inputcheck, preprocess
from ml.inputcheck import ScanCheck, SliceCheck

DicomError = ml_dicom.DicomError
DicomTooLarge = ml_dicom.DicomTooLarge
DicomUnsupported = ml_dicom.DicomUnsupported


def read_dicom(source: bytes | BinaryIO, *, stop_before_pixels: bool = False, allow_deflated: bool = True) -> Dataset:
    """Read one DICOM file; raises DicomError with a clear message on non-DICOM or corrupt input, DicomUnsupported
    for a deflated data set unless ``allow_deflated`` (it would be inflated in memory without a bound)."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    return ml_dicom.read_dataset(source, stop_before_pixels=stop_before_pixels, allow_deflated=allow_deflated)


def is_dicom_bytes(data: bytes) -> bool:
    """True when the bytes start like a DICOM Part 10 file (128-byte preamble + "DICM")."""
    return ml_dicom.is_dicom_bytes(data[:132])


def undecodable_compression(ds: Dataset) -> str | None:
    """The name of the compressed transfer syntax of ``ds`` when no pixel decoder for it is installed here, else
    None (uncompressed, or compressed in a way pydicom can decode)."""
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return None
    try:
        if not uid.is_compressed:
            return None
        if get_decoder(uid).is_available:
            return None
    except (ValueError, NotImplementedError):  # a private or unknown transfer syntax: no decoder either
        pass
    return uid.name if uid.name != str(uid) else f"transfer syntax {uid}"


def modality(ds: Dataset) -> str:
    """`ml.dicom.modality`: the Modality tag, upper case ("" when absent)."""
    return ml_dicom.modality(ds)


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames of a DICOM dataset (1 when absent)."""
    return ml_dicom.frame_count(ds)


def has_functional_groups(ds: Dataset) -> bool:
    """Whether the dataset keeps its geometry and rescale in functional groups (``ml.dicom.has_functional_groups``),
    so even a single frame must go through `split_frames`."""
    return ml_dicom.has_functional_groups(ds)


def split_frames(ds: Dataset, **limits: int | None) -> list[Dataset]:
    """A multi-frame CT (Enhanced CT: one file for a whole series) as single-frame CT datasets
    (``ml.dicom.split_frames``, whose limits these are): each frame with its own geometry, rescale and UID."""
    return ml_dicom.split_frames(ds, **limits)


def to_hu(ds: Dataset, *, max_pixels: int | None = None) -> np.ndarray:
    """Hounsfield units (float32, 2-D); raises DicomError when pixels cannot be decoded. Before decoding, a header
    declaring more than ``max_pixels`` samples raises DicomTooLarge and several frames DicomUnsupported."""
    return ml_dicom.to_hu(ds, max_pixels=max_pixels)


def ct_header_rejection(ds: Dataset) -> str | None:
    """`ml.dicom.ct_header_rejection`: why the header alone rules the file out as CT (nothing decoded), else None."""
    return ml_dicom.ct_header_rejection(ds)


def ct_rejection_reason(ds: Dataset, hu: np.ndarray | None = None) -> str | None:
    """None when the dataset is CT we accept (see the module docstring), else a human explanation."""
    return ml_dicom.ct_rejection_reason(ds, hu)


def release_pixels(ds: Dataset) -> None:
    """`ml.dicom.release_pixels`: drop pydicom's cache of the decoded pixels."""
    ml_dicom.release_pixels(ds)


def plane_name(ds: Dataset) -> str:
    """ "localizer", "axial", "coronal", "sagittal", or "" without an orientation (for messages)."""
    return "localizer" if ml_dicom.is_localizer(ds) else ml_dicom.plane(ds) or ""


def not_axial_reason(ds: Dataset) -> str | None:
    """None for an axial slice (or one without orientation), else why the model cannot read it: a localizer
    (scout) or a coronal or sagittal reformat. The model learnt axial slices only."""
    if ml_dicom.is_axial_slice(ds):
        return None
    if ml_dicom.is_localizer(ds):
        return (
            "This DICOM file is a localizer (scout) image, not an axial slice. The model reads axial head CT slices "
            "only: upload the axial series."
        )
    return (
        f"This DICOM slice is {ml_dicom.plane(ds)}, not axial. The model reads axial head CT slices only: upload the "
        "axial series (reformats are not analysed)."
    )


def sort_datasets(datasets: Sequence[Dataset]) -> list[int]:
    """Indices that put a series in anatomical order (slice normal, then InstanceNumber, then upload order)."""
    return ml_dicom.sort_datasets(datasets)


def slice_position(ds: Dataset) -> float | None:
    """Position in mm along the slice normal, or None without geometry."""
    key = ml_dicom.sort_key(ds)
    return float(key[1]) if key and key[0] == 0 else None


def window_dicom(ds: Dataset, hu: np.ndarray | None = None) -> np.ndarray:
    """The brain-windowed (40/80) uint8 image of a CT slice, for thumbnails and previews shown to people.

    The model reads DICOM through ``ml.preprocess.load_slice`` in its own training window (``MODEL_WINDOW``).
    """
    if hu is None:
        hu = to_hu(ds)
    center, width = preprocess.BRAIN_WINDOW
    return preprocess.apply_window(hu, center, width)


def check_slice(greyscale: np.ndarray, *, colour: float = 0.0) -> SliceCheck:
    """`ml.inputcheck.check_slice`: does one slice in the model window look like head CT in a brain window?"""
    return inputcheck.check_slice(greyscale, colour=colour)


def check_dicom_slice(hu: np.ndarray) -> SliceCheck:
    """`check_slice` for a CT slice in HU, windowed as the model reads it (not as it is shown)."""
    return check_slice(preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))


def check_scan(
    checks: Sequence[SliceCheck], *, total: int | None = None, slice_thicknesses: Sequence[float | None] = ()
) -> ScanCheck:
    """`ml.inputcheck.check_scan`: the verdict ("ok", "warn", "refuse") for a scan from its slices' checks (and its
    DICOM slices' SliceThickness: many thicker than the model's 5 mm are flagged)."""
    return inputcheck.check_scan(list(checks), total=total, slice_thicknesses=slice_thicknesses)


def slice_thickness(ds: Dataset) -> float | None:
    """A DICOM slice's SliceThickness in mm, or None where absent or unreadable."""
    return ml_dicom.first_value(ds.get("SliceThickness"))


def slices_to_check(total: int) -> list[int]:
    """`ml.inputcheck.slices_to_check`: which slices of a long series the input check looks at."""
    return inputcheck.slices_to_check(total)


def read_slice(source: bytes | BinaryIO) -> tuple[np.ndarray, float]:
    """A greyscale uint8 slice in the model window (``ml.preprocess.read_slice``: PNG/JPEG as windowed, DICOM HU ->
    MODEL_WINDOW), and the picture's colour fraction (0 for DICOM) for the input check."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    return preprocess.read_slice(source)
