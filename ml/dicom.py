"""DICOM reading with pydicom + numpy: HU conversion and slice ordering.

Handles the cases found in real head CT: gantry tilt (ordering along the slice normal, not z), uneven spacing,
missing geometry (fall back to InstanceNumber), signed pixels and multi-valued window tags.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian


class DicomError(ValueError):
    """The input is not a readable DICOM file (or lacks what we need from it)."""


class DicomTooLarge(DicomError):
    """The header declares more pixels than allowed; nothing was decoded."""


class DicomUnsupported(DicomError):
    """A readable DICOM file in a form we do not analyse (several frames, a deflated data set)."""


def read_dataset(
    source: str | Path | BinaryIO, *, stop_before_pixels: bool = False, allow_deflated: bool = True
) -> Dataset:
    """Read one DICOM file (path or binary file object); raise DicomError with a clear message otherwise.

    ``allow_deflated=False`` refuses the Deflated transfer syntax (DicomUnsupported) before pydicom inflates it:
    pydicom inflates the whole data set in memory without a bound, so a small upload could expand to gigabytes.
    """
    name = str(source) if isinstance(source, (str, Path)) else getattr(source, "name", "<stream>")
    try:
        if not isinstance(source, (str, Path)):
            source.seek(0)
        if not allow_deflated and _is_deflated(source):
            raise DicomUnsupported(
                "its data set is compressed as Deflated Explicit VR Little Endian, which is not accepted"
            )
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # Files without the 128-byte preamble + "DICM" are still common (older exporters); accept them only
            # when the forced read finds real image tags.
            if not isinstance(source, (str, Path)):
                source.seek(0)
            ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
            if "SOPClassUID" not in ds and "Rows" not in ds:
                raise DicomError(f"{name}: not a DICOM file") from None
    except DicomError:
        raise
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise DicomError(f"{name}: cannot read as DICOM ({exc.__class__.__name__}: {exc})") from exc
    return ds


def _is_deflated(source: str | Path | BinaryIO) -> bool:
    # Reads only the file meta group, which names the transfer syntax, the way dcmread reads it (with the helper
    # dcmread itself calls; pydicom is pinned to 3.0.x), and none of the data set after it.
    from pydicom.filereader import _read_file_meta_info, read_preamble

    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            return _is_deflated(handle)
    try:
        read_preamble(source, True)
        return _read_file_meta_info(source).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    finally:
        source.seek(0)


def is_dicom_bytes(head: bytes) -> bool:
    """True when the bytes start like a DICOM Part 10 file (preamble + 'DICM')."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def is_ct(ds: Dataset) -> bool:
    """Modality is CT."""
    return str(ds.get("Modality", "")).upper() == "CT"


def is_ct_like(ds: Dataset) -> bool:
    """CT, or a Secondary Capture ("OT"/"SC") holding HU-like pixels: one sample, 16-bit, signed or rescaled."""
    if is_ct(ds):
        return True
    if str(ds.get("Modality", "")).upper() not in {"OT", "SC", ""}:
        return False
    one_sample = int(ds.get("SamplesPerPixel", 1)) == 1
    sixteen = int(ds.get("BitsAllocated", 0)) == 16
    hu_hint = int(ds.get("PixelRepresentation", 0)) == 1 or "RescaleIntercept" in ds
    return one_sample and sixteen and hu_hint


def check_pixel_count(ds: Dataset, *, max_pixels: int | None = None) -> None:
    """Refuse from the header alone what must not be decoded: more than ``max_pixels`` samples in all
    (Rows x Columns x NumberOfFrames x SamplesPerPixel; DicomTooLarge) or several frames (DicomUnsupported)."""
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise DicomError("Rows, Columns, NumberOfFrames and SamplesPerPixel must be one number each") from exc
    if max_pixels is not None and rows * columns * frames * samples > max_pixels:
        raise DicomTooLarge(
            f"it declares {rows}x{columns} pixels x {frames} frame(s) x {samples} sample(s), more than the limit "
            f"of {max_pixels:,}"
        )
    if frames > 1:
        raise DicomUnsupported(f"multi-frame DICOM ({frames} frames) is not supported; send one file per slice")


def to_hu(ds: Dataset, *, max_pixels: int | None = None) -> np.ndarray:
    """Pixels in Hounsfield units (float32, 2-D): RescaleSlope/Intercept applied (defaults 1 and 0).

    ``check_pixel_count`` runs first, so an oversized or multi-frame image is refused before anything is decoded.
    """
    check_pixel_count(ds, max_pixels=max_pixels)
    try:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except (TypeError, ValueError) as exc:  # multi-valued or non-numeric
        raise DicomError("RescaleSlope and RescaleIntercept must be one number each") from exc
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DicomError(f"cannot decode pixel data ({exc.__class__.__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise DicomError(f"expected a 2-D greyscale slice, got shape {pixels.shape}")
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def first_value(value) -> float | None:
    """First number of a possibly multi-valued tag (WindowCenter '40\\40'), or None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else None


def _instance(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _key(ds: Dataset, normal: np.ndarray | None) -> tuple:
    ipp = ds.get("ImagePositionPatient")
    if normal is not None and ipp is not None and len(ipp) == 3:
        # Position along the slice normal: correct with gantry tilt, where z alone or IPP[2] can mislead.
        return (0, float(np.dot(np.asarray(ipp, float), normal)), _instance(ds))
    return (1, 0.0, _instance(ds))


def sort_key(ds: Dataset) -> tuple:
    """Position along the slice normal (IPP . normal of IOP), then InstanceNumber. Ties keep the input order (file
    names in natural order for a folder): a SOPInstanceUID compares as text ("...10" before "...9"), so it is no
    order at all."""
    return _key(ds, _normal(ds))


def sort_datasets(datasets: Sequence[Dataset]) -> list[int]:
    """Indices that order a series (stable). One common normal is used so that every slice is projected alike."""
    normal = next((n for n in (_normal(ds) for ds in datasets) if n is not None), None)
    keys = [_key(ds, normal) for ds in datasets]
    return sorted(range(len(datasets)), key=lambda i: (keys[i], i))


def read_series(paths: Sequence[str | Path]) -> list[Dataset]:
    """Read and order the files of one series."""
    datasets = [read_dataset(p) for p in paths]
    return [datasets[i] for i in sort_datasets(datasets)]


def bytes_source(data: bytes) -> BinaryIO:
    return io.BytesIO(data)
