"""Synthetic hostile or broken uploads, shared by the page and API upload tests (no public data needed).

``BAD_INPUTS`` maps a case id to ``(files, code, words, settings)``: ``files()`` gives ``[(name, bytes)]`` to upload,
``code`` is the IngestError code (also the API's ``code``), ``words`` a part of the message the user sees, and
``settings`` overrides needed to provoke the case. ``page_status(code)`` is what the upload page and the API answer.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000MCLossless,
    generate_uid,
)

from tests.phantoms import head_phantom_hu

SERIES_UID = generate_uid()


def ct_dicom(
    *,
    pixels: bool = True,
    instance: int = 1,
    series_uid: str = SERIES_UID,
    size: int = 16,
    hu: np.ndarray | None = None,
    **tags: Any,
) -> bytes:
    """A small valid CT slice (signed 16-bit HU: a head phantom, air to bone) of ``series_uid``. ``tags`` are set
    last: a header that lies (Rows, NumberOfFrames) or holds values of the wrong multiplicity (InstanceNumber=[1, 2]).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(f"ct{instance}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0, 0, float(instance)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if pixels:
        image = head_phantom_hu(size, seed=instance) if hu is None else np.asarray(hu)
        if image.shape != (size, size):
            raise ValueError(f"hu must be {size}x{size}, got {image.shape}")
        ds.PixelData = image.astype("<i2").tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def rgb_secondary_capture(size: int = 16) -> bytes:
    """An 8-bit RGB Secondary Capture (a screenshot stored as DICOM)."""
    return ct_dicom(
        pixels=False,
        size=size,
        Modality="SC",
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        PixelData=np.full((size, size, 3), 90, np.uint8).tobytes(),
    )


def compressed_dicom() -> bytes:
    """A CT slice whose pixel data is compressed as JPEG 2000 Part 2 multi-component, a transfer syntax for which
    pydicom has no decoder at all (pylibjpeg, installed, handles JPEG, JPEG-LS and plain JPEG 2000): pydicom reads the
    header, decoding the pixels is impossible."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.file_meta.TransferSyntaxUID = JPEG2000MCLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 64 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def rewritten_dicom(keyword: str, *, vr: str | None = None, value: bytes | None = None, **tags: Any) -> bytes:
    """ct_dicom(**tags) with one element rewritten in the written bytes, keeping its length: a new VR (FD on text: a
    value length that is no multiple of 8) or a new value (letters where numbers belong), which pydicom refuses to
    write."""
    data = ct_dicom(**tags)
    tag = tag_for_keyword(keyword)
    at = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF), 128)
    if vr is not None:
        data = data[: at + 4] + vr.encode() + data[at + 6 :]
    if value is not None:
        (length,) = struct.unpack("<H", data[at + 6 : at + 8])
        assert len(value) == length, f"{keyword} holds {length} bytes"
        data = data[: at + 8] + value + data[at + 8 + length :]
    return data


def deflated_dicom() -> bytes:
    """A valid CT slice in the Deflated Explicit VR Little Endian transfer syntax (the whole data set zlib-deflated)."""
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (10 gigapixels by default)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    return data[: len(data) // 2]


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_nul_in_a_name() -> bytes:
    """zipfile cannot write a NUL into a name, so write a placeholder of the same length and patch the bytes (in the
    local header and the central directory; the CRC covers the data only)."""
    data = zip_bytes({"slice.dcm#.png": ct_dicom()})
    assert data.count(b"slice.dcm#.png") == 2
    return data.replace(b"slice.dcm#.png", b"slice.dcm\x00.png")


def empty_zip() -> bytes:
    """A valid archive with no entry at all (just the end-of-central-directory record)."""
    return zip_bytes({})


def picture_png(name: str) -> bytes:
    """One of scikit-image's bundled sample pictures (a photo of a cat, text, ...) as PNG: not a head CT."""
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="PNG")
    return buffer.getvalue()


def flat_png(value: int = 128, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, format="PNG")
    return buffer.getvalue()


def series(count: int) -> dict[str, bytes]:
    return {f"series/{i:03d}.dcm": ct_dicom(instance=i) for i in range(1, count + 1)}


BAD_INPUTS: dict[str, tuple[Callable[[], list[tuple[str, bytes]]], str, str, dict]] = {
    "png-decompression-bomb": (lambda: [("bomb.png", png_bomb())], "too_large", "is too large", {}),
    "png-over-max-image-pixels": (
        lambda: [("big.png", png_bomb(5000, 5000))],
        "too_large",
        "is too large",
        {"HEMO_MAX_IMAGE_PIXELS": 1_000_000},
    ),
    "truncated-jpeg": (lambda: [("slice.jpg", truncated_jpeg())], "corrupt_image", "damaged or incomplete", {}),
    "dicom-without-pixels": (lambda: [("ct.dcm", ct_dicom(pixels=False))], "no_pixels", "without an image", {}),
    # Files that decode but are not head CT (ml.inputcheck): the model would score them anyway (the shipped model
    # calls the cat 0.74 and a blank frame 1.0), so they are refused.
    "photo-not-head-ct": (
        lambda: [("cat.png", picture_png("chelsea"))],
        "not_ct",
        "This image does not look like a head CT slice: it is a colour picture",
        {},
    ),
    "text-not-head-ct": (
        lambda: [("scan.png", picture_png("text"))],
        "not_ct",
        "does not look like a head CT slice: no head-sized object",
        {},
    ),
    "dicom-coronal-reformat": (
        lambda: [("coronal.dcm", ct_dicom(size=64, ImageOrientationPatient=[1, 0, 0, 0, 0, -1]))],
        "not_axial",
        "coronal.dcm: This DICOM slice is coronal, not axial. The model reads axial head CT slices only",
        {},
    ),
    "dicom-sagittal-reformat-in-a-series": (
        lambda: [
            (f"s/{i}.dcm", ct_dicom(instance=i, size=64, ImageOrientationPatient=[0, 1, 0, 0, 0, -1]))
            for i in range(1, 4)
        ],
        "not_axial",
        "This DICOM slice is sagittal, not axial",
        {},
    ),
    "dicom-localizer": (
        lambda: [("scout.dcm", ct_dicom(size=64, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]))],
        "not_axial",
        "scout.dcm: This DICOM file is a localizer (scout) image, not an axial slice",
        {},
    ),
    "blank-png": (lambda: [("slice.png", flat_png())], "not_ct", "This image does not look like a head CT slice", {}),
    "long-ct-series-without-a-head": (
        lambda: [
            (
                "series.zip",
                zip_bytes({f"s/{i}.dcm": ct_dicom(instance=i, hu=np.full((16, 16), -1000.0)) for i in range(70)}),
            )
        ],
        "not_ct",
        "64 of the 64 slices checked in this 70-slice series do not look like a head CT slice",
        {},
    ),
    "ct-series-without-a-head": (
        lambda: [(f"{i}.dcm", ct_dicom(instance=i, hu=np.full((16, 16), -1000.0))) for i in (1, 2, 3)],
        "not_ct",
        "3 of the 3 slices of this series do not look like a head CT slice",
        {},
    ),
    # Modality CT, but the pixels are a screen rendering (0-255, no air): not Hounsfield units.
    "dicom-ct-not-in-hounsfield-units": (
        lambda: [("rendered.dcm", ct_dicom(hu=np.full((16, 16), 40.0)))],
        "not_ct",
        "pixel values do not reach air (about -1000 HU; its lowest is 40)",
        {},
    ),
    # An RGB secondary capture (a screenshot saved as DICOM) is not CT: refused as such, before any decoding.
    "dicom-rgb-secondary-capture": (
        lambda: [("capture.dcm", rgb_secondary_capture())],
        "not_ct",
        "capture.dcm: This DICOM file is SC and does not hold CT Hounsfield units",
        {},
    ),
    "dicom-undecodable-compression": (
        lambda: [("ct.dcm", compressed_dicom())],
        "unsupported_compression",
        "cannot decode",
        {},
    ),
    "dicom-corrupt-in-zip": (
        lambda: [("series.zip", zip_bytes({**series(2), "series/bad.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 40}))],
        "corrupt_dicom",
        "cannot be read",
        {},
    ),
    # DICOM headers are checked before any pixel is decoded: a few bytes can declare gigapixels or many frames.
    "dicom-declares-gigapixels": (
        lambda: [("ct.dcm", ct_dicom(Rows=60_000, Columns=60_000))],
        "too_large",
        "is too large: it declares 60000x60000 pixels",
        {},
    ),
    "dicom-over-max-image-pixels": (
        lambda: [("ct.dcm", ct_dicom(size=64))],
        "too_large",
        "more than the limit of 1,000",
        {"HEMO_MAX_IMAGE_PIXELS": 1000},
    ),
    # A multi-frame CT is split into its frames (Enhanced CT: a series in one file); its header is checked first.
    "dicom-declares-more-frames-than-slices": (
        lambda: [("ct.dcm", ct_dicom(NumberOfFrames=5000))],
        "too_many_slices",
        "The upload holds 5000 slices counting the frames",
        {},
    ),
    "dicom-frames-and-slices-over-the-limit": (
        lambda: [("ct.dcm", ct_dicom(NumberOfFrames=900)), *series(200).items()],
        "too_many_slices",
        "The upload holds 1100 slices counting the frames of its multi-frame files",
        {},
    ),
    "dicom-multi-frame-over-series-pixels": (
        lambda: [("ct.dcm", ct_dicom(NumberOfFrames=40))],
        "too_large",
        "ct.dcm is too large: its 40 frames of 16x16 pixels are more than the limit of 10,000 pixels in all",
        {"HEMO_MAX_SERIES_PIXELS": 10_000},
    ),
    "dicom-declares-frames-it-lacks": (
        lambda: [("ct.dcm", ct_dicom(NumberOfFrames=1000))],
        "corrupt_dicom",
        "ct.dcm: the DICOM image cannot be decoded (cannot decode frame",
        {},
    ),
    "dicom-deflated": (lambda: [("ct.dcm", deflated_dicom())], "unsupported_dicom", "Deflated Explicit VR", {}),
    # Tags that pydicom reads but that fail where they are used: refused as damaged, never a 500.
    "dicom-multivalued-instance-number": (
        lambda: [("ct.dcm", ct_dicom(InstanceNumber=[1, 2]))],
        "corrupt_dicom",
        "ct.dcm cannot be read: a DICOM tag is malformed",
        {},
    ),
    "dicom-multivalued-rescale-slope": (
        lambda: [("ct.dcm", ct_dicom(RescaleSlope=[1, 1]))],
        "corrupt_dicom",
        "RescaleSlope and RescaleIntercept must be one number each",
        {},
    ),
    "dicom-single-valued-orientation": (
        lambda: [("ct.dcm", ct_dicom(ImageOrientationPatient=1))],
        "corrupt_dicom",
        "ct.dcm cannot be read: a DICOM tag is malformed",
        {},
    ),
    "dicom-letters-in-position": (
        lambda: [
            ("ct.dcm", rewritten_dicom("ImagePositionPatient", value=b"a\\b\\c ", ImagePositionPatient=["0", "0", "1"]))
        ],
        "corrupt_dicom",
        "slice positions of the series cannot be read",
        {},
    ),
    "dicom-wrong-length-value": (
        lambda: [("ct.dcm", rewritten_dicom("KVP", vr="FD", KVP=120))],
        "corrupt_dicom",
        "ct.dcm cannot be read: a DICOM tag is malformed",
        {},
    ),
    "dicom-malformed-file-meta": (
        lambda: [("ct.dcm", rewritten_dicom("MediaStorageSOPClassUID", vr="FD"))],
        "corrupt_dicom",
        "ct.dcm cannot be read: a DICOM tag is malformed",
        {},
    ),
    "zip-nul-in-name": (lambda: [("series.zip", zip_with_nul_in_a_name())], "zip_unsafe_path", "unsafe path", {}),
    "zip-backslash-traversal": (
        lambda: [("series.zip", zip_bytes({"..\\..\\evil.dcm": ct_dicom()}))],
        "zip_unsafe_path",
        "unsafe path",
        {},
    ),
    "zip-backslash-drive": (
        lambda: [("series.zip", zip_bytes({"C:\\Windows\\evil.dcm": ct_dicom()}))],
        "zip_unsafe_path",
        "unsafe path",
        {},
    ),
    "zip-damaged": (lambda: [("series.zip", b"PK\x03\x04" + b"\x00" * 60)], "bad_zip", "not a readable ZIP", {}),
    "zip-without-entries": (lambda: [("series.zip", empty_zip())], "empty", "contains no files", {}),
    "zip-zero-bytes": (lambda: [("series.zip", b"")], "empty", "is empty", {}),
    "zip-only-non-images": (
        lambda: [("series.zip", zip_bytes({"LICENSE": b"MIT License\n", "meta.json": b"{}"}))],
        "no_images",
        "contains no DICOM file",
        {},
    ),
    "files-over-max-slices": (
        lambda: list(series(4).items()),
        "too_many_slices",
        "at most 3 are accepted",
        {"HEMO_MAX_SLICES": 3},
    ),
    "zip-over-max-members": (
        lambda: [("series.zip", zip_bytes(series(4)))],
        "zip_too_many",
        "at most 3 are accepted",
        {"HEMO_ZIP_MAX_MEMBERS": 3},
    ),
    # The ZIP limits hold for one upload as a whole: two archives each within them, together over them.
    "zips-over-max-members-together": (
        lambda: [("a.zip", zip_bytes(dict(list(series(4).items())[:2]))), ("b.zip", zip_bytes(series(2)))],
        "zip_too_many",
        "at most 3 are accepted in one upload",
        {"HEMO_ZIP_MAX_MEMBERS": 3},
    ),
    "zips-expanding-over-the-limit-together": (
        lambda: [
            ("a.zip", zip_bytes({"a.dcm": ct_dicom(size=600, instance=1)})),
            ("b.zip", zip_bytes({"b.dcm": ct_dicom(size=600, instance=2)})),
        ],
        "zip_bomb",
        "expands to more than 1 MB with the archives before it",
        {"HEMO_ZIP_MAX_UNCOMPRESSED_MB": 1},
    ),
    "zip-over-max-slices": (
        lambda: [("series.zip", zip_bytes(series(4)))],
        "too_many_slices",
        "at most 3 are accepted",
        {"HEMO_MAX_SLICES": 3},
    ),
}


def page_status(code: str) -> int:
    """The status the upload page and the API answer for an IngestError code."""
    from scans.services import IngestError, upload_error_status

    return upload_error_status(IngestError("x", code=code))
