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


def enhanced_ct(
    hus: list[np.ndarray],
    *,
    spacing: float = 5.0,
    frame_order: list[int] | None = None,
    intercepts: list[float] | None = None,
    series_uid: str | None = None,
    compress: bool = False,
):
    """An Enhanced CT (multi-frame) dataset written with pydicom: `hus` are the slices from foot to head, `spacing` mm
    apart; the file stores them in `frame_order` (indices into `hus`, default as given), each frame with its own
    position (PlanePositionSequence) and, with `intercepts`, its own rescale intercept (per-frame
    PixelValueTransformationSequence; else one shared). Orientation and pixel spacing are shared. `compress`: RLE."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    enhanced = "1.2.840.10008.5.1.4.1.1.2.1"
    order = list(range(len(hus))) if frame_order is None else frame_order
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = enhanced
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = enhanced, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Doe^Jane", "MRN-123"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = hus[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1

    def item(**values) -> Dataset:
        entry = Dataset()
        for key, value in values.items():
            setattr(entry, key, value)
        return entry

    shared = item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.5, 0.5], SliceThickness=spacing)]),
    )
    if intercepts is None:
        shared.PixelValueTransformationSequence = Sequence(
            [item(RescaleIntercept=-1024, RescaleSlope=1, RescaleType="HU")]
        )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame, stored = [], []
    for index in order:
        intercept = -1024 if intercepts is None else intercepts[index]
        frame = item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[0, 0, index * spacing])]))
        if intercepts is not None:
            frame.PixelValueTransformationSequence = Sequence(
                [item(RescaleIntercept=intercept, RescaleSlope=1, RescaleType="HU")]
            )
        per_frame.append(frame)
        stored.append(np.rint(hus[index] - intercept).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.stack(stored).tobytes()
    if compress:
        ds.compress(RLELossless, np.stack(stored))
    return ds


def dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
