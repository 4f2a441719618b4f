"""DICOM reading with pydicom + numpy: HU conversion and slice ordering.

Handles the cases found in real head CT: gantry tilt (ordering along the slice normal, not z), uneven spacing,
missing geometry (fall back to InstanceNumber), signed pixels and multi-valued window tags; a multi-frame CT (Enhanced
CT, one file for the whole series) is split into single-frame slices (`split_frames`).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset, validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid


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


def modality(ds: Dataset) -> str:
    """The Modality tag, upper case ("" when absent)."""
    return str(ds.get("Modality", "") or "").upper()


def is_ct(ds: Dataset) -> bool:
    """Modality is CT."""
    return modality(ds) == "CT"


CT_LIKE_MODALITIES = {"OT", "SC", ""}


def is_ct_like(ds: Dataset) -> bool:
    """CT, or a Secondary Capture ("OT"/"SC") holding HU-like pixels: one sample, 16-bit, signed or rescaled."""
    if is_ct(ds):
        return True
    if modality(ds) not in CT_LIKE_MODALITIES:
        return False
    one_sample = int(ds.get("SamplesPerPixel", 1)) == 1
    sixteen = int(ds.get("BitsAllocated", 0)) == 16
    hu_hint = int(ds.get("PixelRepresentation", 0)) == 1 or "RescaleIntercept" in ds
    return one_sample and sixteen and hu_hint


AIR_HU = -500  # a CT slice holds air (about -1000 HU) or the scanner's padding outside its field of view


def ct_header_rejection(ds: Dataset) -> str | None:
    """Why the header alone rules the dataset out as CT (None: it may be CT). Modality CT passes; a Secondary
    Capture (OT/SC or no modality) passes only with one 16-bit sample per pixel, signed or rescaled (`is_ct_like`);
    every other modality (MR, US, CR, ...) is refused. Nothing is decoded."""
    mod = modality(ds)
    if mod == "CT":
        if _samples_per_pixel(ds) != 1:
            return (
                "This DICOM file is marked CT but holds a colour picture (a screenshot), not CT Hounsfield units. "
                "Export the original CT slices."
            )
        return None
    if mod not in CT_LIKE_MODALITIES:
        return f"This DICOM file is {mod} (not CT). Only head CT can be analysed."
    if not is_ct_like(ds):
        return (
            f"This DICOM file is {mod or 'of unknown modality'} and does not hold CT Hounsfield units "
            "(expected 16-bit single-channel pixels). Only head CT can be analysed."
        )
    return None


def _samples_per_pixel(ds: Dataset) -> int | None:
    try:
        return int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        return None


def ct_rejection_reason(ds: Dataset, hu: np.ndarray | None = None) -> str | None:
    """None when the dataset is CT in Hounsfield units that we accept, else a human explanation: the header check
    (`ct_header_rejection`), then the pixels. Every CT slice reaches air (<= AIR_HU); pixels that do not are not HU
    (a screen rendering saved as CT, or rescale tags missing from values stored as HU + 1024). A Secondary Capture
    must in addition reach tissue (>= 0 HU)."""
    reason = ct_header_rejection(ds)
    if reason:
        return reason
    if hu is None:
        hu = to_hu(ds)
    low, high = float(hu.min()), float(hu.max())
    if is_ct(ds):
        if low > AIR_HU:
            return (
                f"This CT file's pixel values do not reach air (about -1000 HU; its lowest is {low:.0f}), so they are "
                "not Hounsfield units: it looks like a screen rendering, or its rescale tags are missing. Export the "
                "original CT slices."
            )
        return None
    if not (low <= AIR_HU and high >= 0):
        return (
            f"This DICOM file is {modality(ds) or 'of unknown modality'} and its pixel values do not look like CT "
            "Hounsfield units (no air and tissue range). Only head CT can be analysed."
        )
    return None


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
        raise DicomUnsupported(
            f"multi-frame DICOM ({frames} frames) is a series, not one slice: split it into its frames first "
            "(split_frames)"
        )


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
        # A dataset read from a file names it (a folder's series); one read from bytes is named by its caller.
        where = f"{Path(ds.filename).name}: " if isinstance(getattr(ds, "filename", None), (str, Path)) else ""
        raise DicomError(f"{where}cannot decode pixel data ({exc.__class__.__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise DicomError(f"expected a 2-D greyscale slice, got shape {pixels.shape}")
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def release_pixels(ds: Dataset) -> None:
    """Drop pydicom's cache of the decoded pixels (kept on the dataset after ``pixel_array``), so a series held as
    datasets costs its encoded bytes, not its decoded images as well."""
    if getattr(ds, "_pixel_array", None) is not None:
        ds._pixel_array = None


def hu_released(ds: Dataset) -> np.ndarray:
    """`to_hu`, then `release_pixels`."""
    try:
        return to_hu(ds)
    finally:
        release_pixels(ds)


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


PLANES = ("sagittal", "coronal", "axial")  # by the patient axis (x, y, z) the slice normal is closest to


def plane(ds: Dataset) -> str | None:
    """ "axial", "coronal" or "sagittal": the patient axis the slice normal (ImageOrientationPatient) is closest to,
    so a gantry tilt up to 45 degrees stays axial; None without an orientation."""
    normal = _normal(ds)
    return None if normal is None else PLANES[int(np.argmax(np.abs(normal)))]


def _values(value) -> list:
    """A tag value as a list of its values (a single value as a list of one; none as an empty list)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def is_localizer(ds: Dataset) -> bool:
    """A scout / topogram (ImageType holds LOCALIZER): a projection for planning, not a slice."""
    return any(str(v).strip().upper() == "LOCALIZER" for v in _values(ds.get("ImageType")) if v is not None)


def is_axial_slice(ds: Dataset) -> bool:
    """Not a localizer, and axial (or without an orientation to say otherwise): what the model reads."""
    return not is_localizer(ds) and plane(ds) in ("axial", None)


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


def _normal_from_positions(datasets: Sequence[Dataset]) -> np.ndarray | None:
    """Without any ImageOrientationPatient: the direction along which the slices' positions lie (their principal
    axis), pointing to the patient axis it is closest to, so an axial series is ordered foot to head as with an
    orientation. None with fewer than two distinct positions."""
    points = []
    for ds in datasets:
        ipp = ds.get("ImagePositionPatient")
        if ipp is not None and len(ipp) == 3:
            try:
                points.append([float(v) for v in ipp])
            except (TypeError, ValueError):
                continue
    points = np.asarray(points, float)
    if len(points) < 2 or not np.isfinite(points).all() or np.ptp(points, axis=0).max() <= 0:
        return None
    axis = np.linalg.svd(points - points.mean(axis=0), full_matrices=False)[2][0]
    return axis if axis[np.argmax(np.abs(axis))] > 0 else -axis


def _series_keys(datasets: Sequence[Dataset]) -> list[tuple]:
    """The `sort_key` of every slice of one series, with one common normal (from the first slice that has an
    orientation, else from the positions themselves) so that every slice is projected alike. Where some slices
    have a position and others not, positions cannot place them all: every slice is keyed by InstanceNumber when
    each has its own; else the positioned slices keep their order and the others follow them."""
    normal = next((n for n in (_normal(ds) for ds in datasets) if n is not None), None)
    if normal is None:
        normal = _normal_from_positions(datasets)
    keys = [_key(ds, normal) for ds in datasets]
    instances = [_instance(ds) for ds in datasets]
    if len({k[0] for k in keys}) > 1 and 0 not in instances and len(set(instances)) == len(instances):
        keys = [(1, 0.0, n) for n in instances]
    return keys


def sort_datasets(datasets: Sequence[Dataset]) -> list[int]:
    """Indices that order a series (stable; see `_series_keys`)."""
    keys = _series_keys(datasets)
    return sorted(range(len(datasets)), key=lambda i: (keys[i], i))


def positions(datasets: Sequence[Dataset]) -> list[float | None]:
    """Each slice's position in mm along the series' slice normal (the `sort_datasets` key), None where unknown."""
    return [key[1] if key[0] == 0 else None for key in _series_keys(datasets)]


def slice_thickness(datasets: Sequence[Dataset]) -> float | None:
    """The series' SliceThickness in mm (the median of the slices that state a positive one), or None."""
    values = [v for v in (first_value(ds.get("SliceThickness")) for ds in datasets) if v is not None and v > 0]
    return float(np.median(values)) if values else None


def read_series(paths: Sequence[str | Path]) -> list[Dataset]:
    """Read and order the files of one series (a multi-frame file gives each of its frames)."""
    datasets = expand_frames([read_dataset(p) for p in paths])
    return [datasets[i] for i in sort_datasets(datasets)]


# Enhanced CT Image Storage and Legacy Converted Enhanced CT Image Storage: their frames become classic CT slices.
ENHANCED_CT_CLASSES = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
# What a single frame no longer has: the frames themselves and the multi-frame description of them.
_MULTI_FRAME_KEYWORDS = (
    "PixelData", "NumberOfFrames", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
    "FrameIncrementPointer", "DimensionIndexSequence", "DimensionOrganizationSequence",
)  # fmt: skip
# Functional group -> (attribute in it, classic attribute of a single-frame CT).
_FRAME_ATTRIBUTES = {
    "PlanePositionSequence": (("ImagePositionPatient", "ImagePositionPatient"),),
    "PlaneOrientationSequence": (("ImageOrientationPatient", "ImageOrientationPatient"),),
    "PixelMeasuresSequence": (("PixelSpacing", "PixelSpacing"), ("SliceThickness", "SliceThickness")),
    "PixelValueTransformationSequence": (
        ("RescaleIntercept", "RescaleIntercept"),
        ("RescaleSlope", "RescaleSlope"),
        ("RescaleType", "RescaleType"),
    ),
    "FrameVOILUTSequence": (("WindowCenter", "WindowCenter"), ("WindowWidth", "WindowWidth")),
    # Enhanced CT says per frame what it is (FrameType ORIGINAL\\PRIMARY\\LOCALIZER\\NONE for a scout frame).
    "CTImageFrameTypeSequence": (("FrameType", "ImageType"),),
}


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames (1 when absent)."""
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise DicomError("NumberOfFrames must be one number") from exc


def has_functional_groups(ds: Dataset) -> bool:
    """Enhanced CT and other multi-frame classes keep geometry, rescale and frame type in functional groups, even
    for a single frame: such a dataset must be flattened (`split_frames`) before it is read."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _is_16_bit_grey(ds: Dataset) -> bool:
    try:
        return int(ds.get("SamplesPerPixel", 1) or 1) == 1 and int(ds.get("BitsAllocated", 16) or 16) == 16
    except (TypeError, ValueError):
        return False


def _frame_value(ds: Dataset, index: int, group: str, name: str) -> DataElement | None:
    """Attribute `name` of functional group `group` for frame `index`: from the frame's own (per-frame) item where
    it is there, else from the shared one, else None."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    for item in ([per_frame[index]] if index < len(per_frame) else []) + list(shared[:1]):
        inner = item.get(group)
        if inner and name in inner[0]:
            element = inner[0][name]
            # A FrameType without its third value (what the frame is: AXIAL, LOCALIZER) says nothing to keep.
            if name != "FrameType" or len(_values(element.value)) >= 3:
                return element
    return None


def split_frames(
    ds: Dataset,
    *,
    max_pixels: int | None = None,
    max_frames: int | None = None,
    max_total_pixels: int | None = None,
) -> list[Dataset]:
    """A multi-frame CT as single-frame CT datasets, one per frame, in frame order (order them with
    `sort_datasets`). Each keeps the file's attributes, takes its frame's position, orientation, spacing, rescale and
    window from the functional groups (Enhanced CT) into the classic attributes, gets its own SOPInstanceUID (derived
    from the file's and the frame number) and InstanceNumber (the frame number), and holds its frame's pixels
    uncompressed (Explicit VR Little Endian). Enhanced CT becomes CT Image Storage. A single-frame dataset comes back
    as is, unless it holds functional groups (a single-frame Enhanced CT), which are flattened the same way. Frames
    are decoded one at a time; more than `max_frames` frames, more than `max_pixels` samples in one
    frame or more than `max_total_pixels` in all is refused from the header (DicomTooLarge), and so is a per-frame
    functional group sequence whose length is not the number of frames (DicomError: frames would lose their position
    or rescale)."""
    frames = frame_count(ds)
    if frames <= 1 and not (has_functional_groups(ds) and _is_16_bit_grey(ds)):
        return [ds]  # a classic slice, or a single frame this cannot flatten: read (or refused) as it is
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    except (TypeError, ValueError) as exc:
        raise DicomError("Rows, Columns, SamplesPerPixel and BitsAllocated must be one number each") from exc
    if max_frames is not None and frames > max_frames:
        raise DicomTooLarge(f"it holds {frames} frames, more than the limit of {max_frames} slices")
    if max_pixels is not None and rows * columns * samples > max_pixels:
        raise DicomTooLarge(f"its frames are {rows}x{columns} pixels, more than the limit of {max_pixels:,}")
    if max_total_pixels is not None and frames * rows * columns * samples > max_total_pixels:
        raise DicomTooLarge(
            f"its {frames} frames of {rows}x{columns} pixels are more than the limit of {max_total_pixels:,} pixels "
            "in all"
        )
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != frames:
        raise DicomError(f"it describes {len(per_frame)} frames in its per-frame functional groups but holds {frames}")
    if samples != 1 or bits != 16:
        raise DicomUnsupported(f"a multi-frame image of {samples} sample(s) of {bits} bits is not CT")
    if "PixelData" not in ds:
        raise DicomError("the multi-frame file holds no pixel data")
    from pydicom.pixels import pixel_array

    base = Dataset()
    for element in ds:
        if element.keyword not in _MULTI_FRAME_KEYWORDS:
            base.add(copy.deepcopy(element))
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class or sop_class in ENHANCED_CT_CLASSES:
        sop_class = CTImageStorage
    source_uid = str(ds.get("SOPInstanceUID", "")) or generate_uid()
    out = []
    for index in range(frames):
        try:
            pixels = pixel_array(ds, index=index)
        except Exception as exc:
            raise DicomError(f"cannot decode frame {index + 1} ({exc.__class__.__name__}: {exc})") from exc
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        frame = FileDataset("", copy.deepcopy(base), file_meta=meta, preamble=b"\0" * 128)
        for group, pairs in _FRAME_ATTRIBUTES.items():
            for inner, classic in pairs:
                element = _frame_value(ds, index, group, inner)
                if element is not None:
                    setattr(frame, classic, copy.deepcopy(element.value))
        # "/" never occurs in a UID, so no other file's frame derives the same one ("1.2.3" frame 11, "1.2.31" frame 1).
        uid = generate_uid(entropy_srcs=[f"{source_uid}/frame/{index}"])
        frame.SOPClassUID = meta.MediaStorageSOPClassUID = sop_class
        frame.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = uid
        validate_file_meta(meta, enforce_standard=True)
        frame.InstanceNumber = index + 1
        frame.PixelData = np.ascontiguousarray(pixels, dtype="<i2" if signed else "<u2").tobytes()
        out.append(frame)
    return out


def expand_frames(datasets: Sequence[Dataset], **limits) -> list[Dataset]:
    """Every multi-frame dataset replaced by its frames (`split_frames`), the others kept."""
    return [frame for ds in datasets for frame in split_frames(ds, **limits)]


def bytes_source(data: bytes) -> BinaryIO:
    return io.BytesIO(data)
