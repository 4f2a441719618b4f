"""Writes for cases and scans. ``scan_ingest`` is THE upload path shared by pages and API.

Ingestion validates everything in memory first (size, type by content, decodability, CT modality, ZIP safety, one
series), then writes rows and files in one transaction; on any error no row and no file remains.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import stat
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.http import HttpRequest
from PIL import Image

from accounts.models import AuditAction, User
from accounts.permissions import user_can_read_record, user_can_write, user_can_write_record
from accounts.services import record_audit_event
from inference import imaging
from scans.models import Case, Scan, ScanKind, Slice, clean_filename, private_storage, validate_patient_ref

logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image
THUMBNAIL_SIZE = (256, 256)
MB = 1024 * 1024

# Tags removed before a DICOM file is stored (a superset of what identifies a patient, a clinician or a site in the
# DICOM basic confidentiality profile that matters for us). Geometry, rescale and acquisition parameters stay.
# UIDs stay too: grouping and ordering need them, and they name no one.
IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientMotherBirthName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAge",
        "PatientSex",
        "PatientSize",
        "PatientWeight",
        "PatientComments",
        "PatientInsurancePlanCodeSequence",
        "MilitaryRank",
        "BranchOfService",
        "EthnicGroup",
        "Occupation",
        "MedicalRecordLocator",
        "AdditionalPatientHistory",
        "PatientReligiousPreference",
        "CountryOfResidence",
        "RegionOfResidence",
        "PatientState",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "InstitutionCodeSequence",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "ReferringPhysicianIdentificationSequence",
        "PerformingPhysicianName",
        "PerformingPhysicianIdentificationSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence",
        "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence",
        "RequestingPhysician",
        "ScheduledPerformingPhysicianName",
        "OperatorsName",
        "OperatorIdentificationSequence",
        "AccessionNumber",
        "StudyID",
        "StationName",
        "DeviceSerialNumber",
        "RequestAttributesSequence",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "AdmissionID",
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "AcquisitionDateTime",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "StudyDescription",
        "SeriesDescription",
        "ImageComments",
        "RequestedProcedureDescription",
        "PerformedProcedureStepDescription",
        "DerivationDescription",
        "TextValue",
        "RequestingService",
        "RequestingServiceCodeSequence",
        "ReasonForTheRequestedProcedure",
        "ReasonForStudy",
        "RequestedProcedureComments",
        "ImagingServiceRequestComments",
        "PatientTransportArrangements",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "InstitutionalDepartmentTypeCodeSequence",
        "ContentCreatorName",
        "PersonName",
        "VerifyingObserverName",
    }
)


class IngestError(ValidationError):
    """An upload was refused; ``message`` says why in words a clinician understands. Nothing was stored."""


# HTTP status for a refused upload, by IngestError code, the same on the upload page and in the API: too big -> 413,
# a type or form we do not analyse -> 415, anything else wrong with the content -> 400.
TOO_LARGE_CODES = {"too_large", "zip_bomb", "zip_too_many", "too_many_slices"}
UNSUPPORTED_CODES = {
    "unsupported_type",
    "unsupported_compression",
    "unsupported_dicom",
    "not_ct",
    "not_axial",
    "mixed",
}


def upload_error_status(error: IngestError) -> int:
    """The HTTP status that answers a refused upload."""
    if error.code in TOO_LARGE_CODES:
        return 413
    if error.code in UNSUPPORTED_CODES:
        return 415
    return 400


@dataclass
class _Upload:
    """One file to ingest, after ZIPs were expanded."""

    name: str
    data: bytes
    kind: str = ""  # "png", "jpeg", "dicom"
    dataset: Any = None
    # Set for members of a ZIP archive: the archive's name. Archives of a series folder often carry a LICENSE, a
    # README or JSON sidecars; such members are skipped (and reported) instead of refusing the whole upload.
    archive: str = ""
    # A frame of a multi-frame file keeps no bytes of its own (data is empty): the checksum of the frame as a file.
    sha256: str = ""


@dataclass
class _PreparedSlice:
    name: str
    data: bytes  # what is stored: the original image, or the de-identified DICOM
    sha256: str  # of the bytes as uploaded
    content_type: str
    greyscale: Any  # uint8 HxW for thumbnail/preview
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreparedUpload:
    """An upload read, checked, decoded and rendered (`scan_upload_prepare`), ready to be stored by `scan_store`:
    the slow part of an upload, done before any transaction opens."""

    slices: list[_PreparedSlice]
    kind: str
    modality: str
    details: dict
    uploaded_names: list[str]
    renders: list[tuple[bytes, bytes]]  # per slice: thumbnail PNG, preview PNG


# --- cases ------------------------------------------------------------------------------------------------------------


@transaction.atomic
def case_create(
    *, user: User, patient_ref: str, title: str = "", notes: str = "", request: HttpRequest | None = None
) -> Case:
    """Create a case in the user's organization (clinicians and admins only)."""
    if not user_can_write(user):
        raise PermissionDenied("You may not create cases.")
    patient_ref = (patient_ref or "").strip()
    validate_patient_ref(patient_ref)
    case = Case(
        organization_id=user.organization_id, owner=user, patient_ref=patient_ref, title=title.strip(), notes=notes
    )
    case.full_clean()
    case.save()
    record_audit_event(action=AuditAction.CASE_CREATE, actor=user, target=case, request=request)
    return case


@transaction.atomic
def case_update(
    *, case: Case, user: User, title: str | None = None, notes: str | None = None, request: HttpRequest | None = None
) -> Case:
    """Change a case's title or notes (the patient reference is fixed once set)."""
    if not user_can_write_record(user, case.organization_id):
        raise PermissionDenied("You may not change this case.")
    changed = []
    if title is not None:
        case.title, changed = title.strip(), [*changed, "title"]
    if notes is not None:
        case.notes, changed = notes, [*changed, "notes"]
    if changed:
        case.full_clean()
        case.save(update_fields=[*changed, "modified"])
        record_audit_event(
            action=AuditAction.CASE_UPDATE, actor=user, target=case, request=request, details={"fields": changed}
        )
    return case


def case_record_view(*, case: Case, user: User, request: HttpRequest | None = None) -> None:
    """Audit that a user opened a case (pages and API call it from their detail views)."""
    if not user_can_read_record(user, case.organization_id):
        raise PermissionDenied
    record_audit_event(action=AuditAction.CASE_VIEW, actor=user, target=case, request=request)


@transaction.atomic
def slice_record_download(*, slice_: Slice, user: User, via: str, request: HttpRequest | None = None) -> None:
    """Audit that a user downloaded a slice's stored original. The file views (page and API) call it once the file
    is open, so a missing file is a 404 and no download. Previews and thumbnails are not audited."""
    case = slice_.scan.case
    if not user_can_read_record(user, case.organization_id):
        raise PermissionDenied
    record_audit_event(
        action=AuditAction.FILE_DOWNLOAD,
        actor=user,
        target=slice_,
        organization=case.organization,
        request=request,
        details={"scan": str(slice_.scan_id), "index": slice_.index, "via": via},
    )


# --- ingestion --------------------------------------------------------------------------------------------------------


def scan_ingest(*, case: Case, user: User, files: Sequence[BinaryIO], request: HttpRequest | None = None) -> Scan:
    """Validate and store one upload as one Scan of ``case``; return it with its ordered slices.

    ``files``: Django UploadedFiles (or binary file objects with a ``name``): one PNG or JPEG, one or several DICOM
    files of one CT series, or a ZIP holding one series. Type is detected from content, never from the name.
    Raises IngestError (a ValidationError) with a clear message; on any error no rows or files are left.
    Identifying DICOM tags and private tags are removed before anything is written.
    """
    if not user_can_write_record(user, case.organization_id):
        raise PermissionDenied("You may not upload to this case.")
    return scan_store(case=case, user=user, upload=scan_upload_prepare(files=files), request=request)


def scan_upload_prepare(*, files: Sequence[BinaryIO]) -> PreparedUpload:
    """The checks and the slow work of an upload, without the database: read (limits, ZIP expansion), decode, check,
    de-identify and render thumbnails and previews. Raises IngestError. Callers that store the scan inside a bigger
    transaction (``inference.services.scan_submit``) call this first, so that no transaction (and, on SQLite, no
    database-wide write lock) is held while a long series is decoded."""
    uploads, uploaded_names = _read_uploads(files)
    prepared, kind, modality, details = _prepare(uploads)
    renders = [
        (_png_bytes(item.greyscale, thumbnail=True), _png_bytes(item.greyscale, thumbnail=False)) for item in prepared
    ]
    return PreparedUpload(prepared, kind, modality, details, uploaded_names, renders)


def _read_uploads(files: Sequence[BinaryIO]) -> tuple[list[_Upload], list[str]]:
    limit = settings.HEMO_MAX_UPLOAD_MB * MB
    if not files:
        raise IngestError("No file was uploaded.", code="empty")
    declared = sum(int(getattr(f, "size", 0) or 0) for f in files)
    if declared > limit:
        raise IngestError(too_big_message(declared, limit), code="too_large")
    uploads: list[_Upload] = []
    total = 0
    for f in files:
        name = clean_filename(getattr(f, "name", "") or "", default="upload")
        if hasattr(f, "seek"):
            f.seek(0)
        # Read at most one byte over the limit: enough to know it is too big without holding more.
        data = f.read(limit - total + 1)
        total += len(data)
        if total > limit:
            raise IngestError(too_big_message(total, limit), code="too_large")
        if not data:
            raise IngestError(f"The file {name} is empty.", code="empty")
        uploads.append(_Upload(name=name, data=data))
    expanded: list[_Upload] = []
    # The expansion limits hold for the request as a whole: ten archives do not get ten budgets.
    budget = _ZipBudget(_zip_limit(), settings.HEMO_ZIP_MAX_MEMBERS)
    for upload in uploads:
        if upload.data.startswith(ZIP_MAGICS):
            expanded.extend(_expand_zip(upload, budget))
        else:
            expanded.append(upload)
    return expanded, [u.name for u in uploads]


@dataclass
class _ZipBudget:
    """What the ZIP archives of one upload may still expand to: bytes and entries."""

    bytes_left: int
    members_left: int


def too_big_message(size: int, limit: int) -> str:
    return f"The upload is {size / MB:.1f} MB; the limit is {limit / MB:.0f} MB."


def _zip_limit() -> int:
    return settings.HEMO_ZIP_MAX_UNCOMPRESSED_MB * MB


def _unsafe_member_name(info: zipfile.ZipInfo) -> bool:
    # zipfile cuts names at the first NUL byte ("scan.dcm\0.exe" reads as "scan.dcm"); the name as stored in the
    # archive keeps it, and such a name is never an honest one.
    if "\x00" in info.orig_filename:
        return True
    normalized = info.filename.replace("\\", "/")
    parts = PurePosixPath(normalized).parts
    return normalized.startswith("/") or bool(re.match(r"^[A-Za-z]:", normalized)) or ".." in parts


def _expand_zip(upload: _Upload, budget: _ZipBudget) -> list[_Upload]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise IngestError(f"{upload.name} is not a readable ZIP archive ({exc}).", code="bad_zip") from exc
    if len(infos) > budget.members_left:
        raise IngestError(
            f"{upload.name} holds {len(infos)} entries; at most {settings.HEMO_ZIP_MAX_MEMBERS} are accepted "
            "in one upload.",
            code="zip_too_many",
        )
    budget.members_left -= len(infos)
    max_total = budget.bytes_left
    max_ratio = settings.HEMO_ZIP_MAX_RATIO
    members: list[zipfile.ZipInfo] = []
    total = 0
    for info in infos:
        if _unsafe_member_name(info):
            raise IngestError(
                f"{upload.name} contains an unsafe path ({info.orig_filename!r}); archives must not point outside "
                "themselves.",
                code="zip_unsafe_path",
            )
        if stat.S_ISLNK(info.external_attr >> 16):
            raise IngestError(f"{upload.name} contains a symbolic link ({info.filename!r}).", code="zip_symlink")
        if info.flag_bits & 0x1:
            raise IngestError(f"{upload.name} is encrypted; upload an unencrypted archive.", code="zip_encrypted")
        if info.is_dir():
            continue
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        base = parts[-1] if parts else ""
        # Folders and files that archivers add (macOS metadata, hidden files, the DICOMDIR index) carry no slice.
        if parts and (parts[0] == "__MACOSX" or base.startswith(".") or base.upper() == "DICOMDIR"):
            continue
        total += info.file_size
        if total > max_total:
            raise IngestError(
                f"{upload.name} expands to more than {settings.HEMO_ZIP_MAX_UNCOMPRESSED_MB} MB"
                + (" with the archives before it in this upload." if max_total < _zip_limit() else "."),
                code="zip_bomb",
            )
        # Real images compress a few times at most; extreme ratios are how decompression bombs work.
        if info.file_size > MB and info.file_size > max_ratio * max(info.compress_size, 1):
            raise IngestError(
                f"{upload.name} looks like a decompression bomb ({info.filename!r} is compressed "
                f"{info.file_size // max(info.compress_size, 1)}:1).",
                code="zip_bomb",
            )
        members.append(info)
    if total > MB and total > max_ratio * len(upload.data):
        raise IngestError(f"{upload.name} looks like a decompression bomb.", code="zip_bomb")
    if not members:
        raise IngestError(f"The ZIP archive {upload.name} contains no files.", code="empty")
    budget.bytes_left -= total
    expanded = []
    for info in members:
        try:
            data = archive.read(info)  # zipfile stops at the declared size and checks the CRC
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise IngestError(f"{upload.name} is damaged ({info.filename}: {exc}).", code="bad_zip") from exc
        name = clean_filename(info.filename, default="member")
        if data.startswith(ZIP_MAGICS):
            raise IngestError(
                f"{upload.name} contains another ZIP archive ({name}); upload a single archive.", code="zip_nested"
            )
        if not data:
            raise IngestError(f"The file {name} in {upload.name} is empty.", code="empty")
        expanded.append(_Upload(name=name, data=data, archive=upload.name))
    return expanded


def _detect(upload: _Upload) -> bool:
    """Set ``upload.kind`` from the content. False for a ZIP member that is neither DICOM nor PNG/JPEG (a LICENSE,
    a README, a JSON sidecar): the caller skips it. A loose file of another type is refused, and so is a file that
    starts like DICOM (preamble + "DICM") but cannot be read, wherever it comes from: that is a damaged slice."""
    head = upload.data[:16]
    if head.startswith(PNG_MAGIC):
        upload.kind = "png"
        return True
    if head.startswith(JPEG_MAGIC):
        upload.kind = "jpeg"
        return True
    try:
        upload.dataset = imaging.read_dicom(upload.data, allow_deflated=False)
    except imaging.DicomUnsupported as exc:
        raise IngestError(
            f"{upload.name}: {exc}. Export the series uncompressed and upload it again.", code="unsupported_dicom"
        ) from exc
    except imaging.DicomError as exc:
        if imaging.is_dicom_bytes(upload.data):
            raise IngestError(
                f"{upload.name} is a DICOM file that cannot be read: it is damaged or incomplete.",
                code="corrupt_dicom",
            ) from exc
        if upload.archive:
            return False
        raise IngestError(
            f"{upload.name} is not a supported file. Upload a PNG or JPEG image, DICOM files of one CT "
            "series, or a ZIP of such a series.",
            code="unsupported_type",
        ) from exc
    ds = upload.dataset
    with _malformed_dicom_refused(upload.name):
        is_image = _is_dicomdir(ds) or "SOPClassUID" in ds or "Rows" in ds
    if not is_image:
        # pydicom reads garbage after a "DICM" marker without complaint; what it finds is no image of any kind.
        raise IngestError(
            f"{upload.name} is a DICOM file that cannot be read: it is damaged or incomplete.", code="corrupt_dicom"
        )
    upload.kind = "dicom"
    return True


def _refuse_undecodable(upload: _Upload) -> None:
    """Refuse a DICOM upload whose pixels are compressed in a way no installed decoder handles."""
    compression = imaging.undecodable_compression(upload.dataset)
    if compression:
        raise IngestError(
            f"{upload.name}: its pixels are compressed as {compression}, which this server cannot decode. "
            "Export the series uncompressed and upload it again.",
            code="unsupported_compression",
        )


@contextmanager
def _dicom_errors_refused(name: str) -> Iterator[None]:
    """The errors ``ml.dicom`` names (too large, unsupported, undecodable) as the upload's refusals."""
    try:
        yield
    except imaging.DicomTooLarge as exc:
        raise IngestError(f"{name} is too large: {exc}.", code="too_large") from exc
    except imaging.DicomUnsupported as exc:
        raise IngestError(f"{name}: {exc}.", code="unsupported_dicom") from exc
    except imaging.DicomError as exc:
        raise IngestError(f"{name}: the DICOM image cannot be decoded ({exc}).", code="corrupt_dicom") from exc


def _split_multi_frame(uploads: list[_Upload]) -> list[_Upload]:
    """A multi-frame CT (Enhanced CT: one file holding a whole series) becomes one DICOM upload per frame, named
    "<file> frame <n>", so it is checked, ordered, de-identified and stored as a series of single-frame slices. The
    limits are checked from the headers before any frame is decoded: all frames and slices of the upload count
    against HEMO_MAX_SLICES, each frame against HEMO_MAX_IMAGE_PIXELS, each file against HEMO_MAX_SERIES_PIXELS.
    A frame keeps only its dataset (no copy of its bytes; `sha256` is its checksum as a file)."""
    counts = []
    for upload in uploads:
        with _malformed_dicom_refused(upload.name):
            counts.append(imaging.frame_count(upload.dataset) if upload.kind == "dicom" else 1)
    if sum(counts) > settings.HEMO_MAX_SLICES and any(count > 1 for count in counts):
        raise IngestError(
            f"The upload holds {sum(counts)} slices counting the frames of its multi-frame files; at most "
            f"{settings.HEMO_MAX_SLICES} are accepted.",
            code="too_many_slices",
        )
    out: list[_Upload] = []
    for upload, count in zip(uploads, counts, strict=True):
        if count <= 1 and (upload.kind != "dicom" or not imaging.has_functional_groups(upload.dataset)):
            out.append(upload)
            continue
        _refuse_undecodable(upload)
        # Errors the split names get their own message; any other is a malformed file (never a 500).
        with _malformed_dicom_refused(upload.name), _dicom_errors_refused(upload.name):
            datasets = imaging.split_frames(
                upload.dataset,
                max_pixels=settings.HEMO_MAX_IMAGE_PIXELS,
                max_frames=settings.HEMO_MAX_SLICES,
                max_total_pixels=settings.HEMO_MAX_SERIES_PIXELS,
            )
            upload.dataset = None  # the encoded frames are no longer needed
            for number, ds in enumerate(datasets, 1):
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                name = upload.name if len(datasets) == 1 else f"{upload.name} frame {number}"
                frame = _Upload(name=name, data=b"", kind="dicom", dataset=ds)
                frame.archive, frame.sha256 = upload.archive, hashlib.sha256(buffer.getbuffer()).hexdigest()
                out.append(frame)
    return out


def _is_dicomdir(ds: Any) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return sop_class == MEDIA_STORAGE_DIRECTORY_UID or "DirectoryRecordSequence" in ds


def _names(names: list[str], *, limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _prepare(uploads: list[_Upload]) -> tuple[list[_PreparedSlice], str, str, dict]:
    skipped = [u for u in uploads if not _detect(u)]
    uploads = [u for u in uploads if u.kind and not (u.kind == "dicom" and _is_dicomdir(u.dataset))]
    if not uploads:
        if skipped:
            archives = sorted({u.archive for u in skipped})
            raise IngestError(
                f"{_names(archives)} contains no DICOM file and no PNG/JPEG image (found only "
                f"{_names([u.name for u in skipped])}). Upload a ZIP of a CT series.",
                code="no_images",
            )
        raise IngestError("The upload contains no image.", code="empty")
    prepared, kind, modality, details = _prepare_slices(_split_multi_frame(uploads))
    check = details.get("input_check")
    if check and check["verdict"] == "refuse":
        raise IngestError(
            f"{check['message']} Only head CT can be analysed: if this is a head CT, upload its DICOM file or series, "
            "or a greyscale PNG/JPEG exported in a brain window.",
            code="not_ct",
        )
    if skipped:
        # Reported to the user (upload message, API answer) and kept with the scan; base names only, as for
        # original_filenames: folder names inside an archive may name a patient.
        details = {**details, "skipped_files": [u.name for u in skipped]}
    return prepared, kind, modality, details


def _slice_check(name: str, check: Any, *args: Any, **kwargs: Any) -> imaging.SliceCheck | None:
    """Run an input check (`ml.inputcheck` through `inference.imaging`) on a slice that decoded. The check is a guard,
    not a gate of its own: should it fail on some input, the upload goes on unchecked (logged), never a 500."""
    try:
        return check(*args, **kwargs)
    except Exception:
        logger.exception("The input check failed on %s; the upload continues unchecked", name)
        return None


def _scan_check(
    checks: list[imaging.SliceCheck | None], total: int, *, slice_thicknesses: list[float | None] | None = None
) -> dict:
    """``{"input_check": verdict}`` for a scan's details (`ml.inputcheck.ScanCheck.to_dict`), or nothing when a
    slice's check failed."""
    if any(c is None for c in checks):
        return {}
    verdict = imaging.check_scan(checks, total=total, slice_thicknesses=slice_thicknesses or [])
    return {"input_check": verdict.to_dict()}


def _prepare_slices(uploads: list[_Upload]) -> tuple[list[_PreparedSlice], str, str, dict]:
    kinds = {u.kind for u in uploads}
    if "dicom" in kinds and len(kinds) > 1:
        raise IngestError("The upload mixes DICOM files and PNG/JPEG images; upload them separately.", code="mixed")
    if "dicom" in kinds:
        return _prepare_dicom(uploads)
    if len(uploads) > 1:
        raise IngestError(
            f"The upload holds {len(uploads)} PNG/JPEG images; upload one image at a time (a PNG or JPEG is "
            "analysed as a single slice), or a DICOM series.",
            code="several_images",
        )
    return _prepare_image(uploads[0])


def _prepare_image(upload: _Upload) -> tuple[list[_PreparedSlice], str, str, dict]:
    expected = "PNG" if upload.kind == "png" else "JPEG"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as probe:
                if probe.format != expected:
                    raise ValueError(f"content is {probe.format}, not {expected}")
                width, height = probe.size
                if width * height > settings.HEMO_MAX_IMAGE_PIXELS:
                    raise IngestError(f"{upload.name} is too large ({width}x{height} pixels).", code="too_large")
                probe.verify()  # checksums (PNG CRCs) without decoding
            with Image.open(io.BytesIO(upload.data)) as image:
                image.load()  # a full decode: truncated or corrupt data fails here
    except IngestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The header declares more pixels than Pillow's MAX_IMAGE_PIXELS: refused before anything is decoded.
        raise IngestError(
            f"{upload.name} is too large: it declares more than {Image.MAX_IMAGE_PIXELS:,} pixels (a CT slice has "
            "well under a million).",
            code="too_large",
        ) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on bad data
        raise IngestError(
            f"{upload.name} is not a valid {expected} image: it is damaged or incomplete.", code="corrupt_image"
        ) from exc
    try:
        greyscale, colour = imaging.read_slice(upload.data)
    except Exception as exc:
        raise IngestError(
            f"{upload.name} could not be read as a greyscale slice ({exc}).", code="corrupt_image"
        ) from exc
    content_type = "image/png" if upload.kind == "png" else "image/jpeg"
    # Images are stored as uploaded (the checksum then matches what the user has). They carry no DICOM tags;
    # text burnt into pixels cannot be removed automatically, which the upload page should say.
    prepared = _PreparedSlice(
        name=upload.name,
        data=upload.data,
        sha256=hashlib.sha256(upload.data).hexdigest(),
        content_type=content_type,
        greyscale=greyscale,
        meta={"rows": greyscale.shape[0], "columns": greyscale.shape[1]},  # as shown: after any EXIF rotation
    )
    check = _slice_check(upload.name, imaging.check_slice, greyscale, colour=colour)
    return [prepared], ScanKind.IMAGE, "", {"format": expected, **_scan_check([check], 1)}


# Whatever its keyword, at any depth: person names, dates, times (vendors and newer DICOM editions add such tags,
# e.g. VerifyingObserverName or DateOfLastCalibration, that no fixed list keeps up with), and UN: a tag that
# pydicom's dictionary does not know, in an implicit-VR file, whose value (a date, a name) cannot be judged.
IDENTIFYING_VRS = frozenset({"PN", "DA", "DT", "TM", "UN"})


def _deidentify(ds: Any) -> None:
    def remove(dataset: Any, element: Any) -> None:
        if element.tag.is_private or element.keyword in IDENTIFYING_KEYWORDS or element.VR in IDENTIFYING_VRS:
            del dataset[element.tag]

    ds.walk(remove)
    ds.PatientIdentityRemoved = "YES"
    # LO: at most 64 characters (a longer value is not valid DICOM and strict readers refuse it).
    ds.DeidentificationMethod = "HemoPlatform: identifying, name, date/time, private tags removed"


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


@contextmanager
def _malformed_dicom_refused(what: str) -> Iterator[None]:
    """Refuse the upload when reading ``what`` fails in a way no check foresaw. pydicom converts tag values when
    they are first used, so a malformed value (a multi-valued InstanceNumber, a non-numeric position, a wrong
    length) fails wherever that is: a TypeError or ValueError from the file is the upload's fault, not a 500."""
    try:
        yield
    except (IngestError, MemoryError):
        raise
    except Exception as exc:
        logger.info("Refused a malformed DICOM upload (%s)", what, exc_info=True)
        raise IngestError(
            f"{what} cannot be read: a DICOM tag is malformed or the file is damaged ({exc.__class__.__name__}).",
            code="corrupt_dicom",
        ) from exc


def _dicom_greyscale(upload: _Upload, seen: set[str], *, check: bool) -> tuple[Any, imaging.SliceCheck | None]:
    """Check one DICOM slice (pixels, duplicates, compression, size, CT) and return its windowed uint8 image and,
    when ``check``, its input check (in the model's window)."""
    ds = upload.dataset
    if "PixelData" not in ds:
        raise IngestError(f"{upload.name} is a DICOM file without an image.", code="no_pixels")
    sop = str(ds.get("SOPInstanceUID", ""))
    if sop and sop in seen:
        raise IngestError(f"{upload.name} repeats a slice that is already in the upload.", code="duplicate")
    seen.add(sop)
    _refuse_undecodable(upload)
    with _dicom_errors_refused(upload.name):
        # The header is checked before any pixel is decoded: a few bytes can declare gigapixels, and an RGB or MR
        # file is refused as not CT rather than as pixels that cannot be read as HU.
        reason = imaging.ct_header_rejection(ds)
        if reason:
            raise IngestError(f"{upload.name}: {reason}", code="not_ct")
        hu = imaging.to_hu(ds, max_pixels=settings.HEMO_MAX_IMAGE_PIXELS)
        reason = imaging.ct_rejection_reason(ds, hu)
    if reason:
        raise IngestError(f"{upload.name}: {reason}", code="not_ct")
    with _malformed_dicom_refused(upload.name):
        reason = imaging.not_axial_reason(ds)
    if reason:
        raise IngestError(f"{upload.name}: {reason}", code="not_axial")
    greyscale = imaging.window_dicom(ds, hu)
    slice_check = _slice_check(upload.name, imaging.check_dicom_slice, hu) if check else None
    del hu
    imaging.release_pixels(ds)  # pydicom caches the decoded pixels; the encoded PixelData is all we store
    return greyscale, slice_check


def _prepare_dicom(uploads: list[_Upload]) -> tuple[list[_PreparedSlice], str, str, dict]:
    if len(uploads) > settings.HEMO_MAX_SLICES:
        raise IngestError(
            f"The series has {len(uploads)} slices; at most {settings.HEMO_MAX_SLICES} are accepted.",
            code="too_many_slices",
        )
    series: dict[str, list[_Upload]] = {}
    for upload in uploads:
        with _malformed_dicom_refused(upload.name):
            series.setdefault(str(upload.dataset.get("SeriesInstanceUID", "")), []).append(upload)
    if len(series) > 1:
        raise IngestError(
            f"The upload holds {len(series)} different DICOM series ({_series_list(series)}); upload one series at "
            "a time: the axial one, of slices 5 mm thick or thinner where the study has a choice.",
            code="several_series",
        )
    seen: set[str] = set()
    greyscales = []  # uint8 windowed images, kept instead of float32 HU to bound memory on long series
    checks = []  # the input check of the slices it looks at (a long series: evenly spaced in upload order)
    to_check = set(imaging.slices_to_check(len(uploads)))
    for i, upload in enumerate(uploads):
        with _malformed_dicom_refused(upload.name):
            greyscale, check = _dicom_greyscale(upload, seen, check=i in to_check)
        greyscales.append(greyscale)
        if i in to_check:
            checks.append(check)
    with _malformed_dicom_refused("The slice positions of the series"):
        order = imaging.sort_datasets([u.dataset for u in uploads])
    prepared = []
    for i in order:
        upload, greyscale = uploads[i], greyscales[i]
        with _malformed_dicom_refused(upload.name):
            prepared.append(_dicom_prepared(upload, greyscale))
    first = uploads[order[0]].dataset
    details = {
        "gantry_tilt": _float_or_none(first.get("GantryDetectorTilt")),
        "manufacturer": str(first.get("Manufacturer", "")),
        **_scan_check(checks, len(uploads), slice_thicknesses=[imaging.slice_thickness(u.dataset) for u in uploads]),
    }
    return prepared, ScanKind.DICOM_SERIES, imaging.modality(first), details


def _series_list(series: dict[str, list[_Upload]]) -> str:
    """The series of a refused upload as people tell them apart: description, slice count, thickness and plane.
    Best effort: a tag that cannot be read is left out of the list, so the refusal stays "several series" (the
    slices' own faults are reported once there is one series to read)."""
    parts = []
    for number, members in enumerate(list(series.values())[:8], start=1):
        first = members[0].dataset
        description = _readable(lambda ds: _one_line(ds.get("SeriesDescription")), first, "")[:64] or f"series {number}"
        thickness = _readable(imaging.slice_thickness, first, None)
        plane = _readable(imaging.plane_name, first, "")
        facts = [f"{len(members)} slice{'s' if len(members) != 1 else ''}"]
        facts += [f"{thickness:g} mm"] if thickness is not None and math.isfinite(thickness) and thickness > 0 else []
        facts += [plane] if plane else []
        parts.append(f"{description}: {', '.join(facts)}")
    return "; ".join(parts) + ("; ..." if len(series) > 8 else "")


def _readable(read: Any, ds: Any, default: Any) -> Any:
    """``read(ds)``, or ``default`` where a malformed tag makes pydicom (or the arithmetic on it) fail."""
    try:
        return read(ds)
    except Exception:  # noqa: BLE001 - any fault of one tag only drops that fact from a message
        return default


def _one_line(value: Any) -> str:
    """A tag value for a one-line message: the first of several values, control characters as spaces."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):  # a MultiValue too
        value = value[0] if len(value) else ""
    return " ".join(str(value if value is not None else "").split())


def _dicom_prepared(upload: _Upload, greyscale: Any) -> _PreparedSlice:
    """What is stored for one checked DICOM slice: its geometry and the de-identified file."""
    ds = upload.dataset
    meta = {
        "rows": int(ds.get("Rows", 0) or 0) or None,
        "columns": int(ds.get("Columns", 0) or 0) or None,
        "rescale_slope": _float_or_none(ds.get("RescaleSlope", 1)),
        "rescale_intercept": _float_or_none(ds.get("RescaleIntercept", 0)),
        "pixel_spacing": _floats(ds.get("PixelSpacing")),
        "slice_thickness": _float_or_none(ds.get("SliceThickness")),
        "image_position": _floats(ds.get("ImagePositionPatient")),
        "slice_position": imaging.slice_position(ds),
        "instance_number": int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None,
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
    }
    sha = upload.sha256 or hashlib.sha256(upload.data).hexdigest()
    _deidentify(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return _PreparedSlice(
        name=upload.name,
        data=buffer.getvalue(),
        sha256=sha,
        content_type="application/dicom",
        greyscale=greyscale,
        meta=meta,
    )


def _png_bytes(greyscale: Any, *, thumbnail: bool) -> bytes:
    image = Image.fromarray(greyscale).convert("L")
    if thumbnail:
        image.thumbnail(THUMBNAIL_SIZE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _scan_checksum(prepared: list[_PreparedSlice]) -> str:
    # The same series gives the same checksum whether it came as files or as a ZIP.
    if len(prepared) == 1:
        return prepared[0].sha256
    return hashlib.sha256("\n".join(p.sha256 for p in prepared).encode()).hexdigest()


def scan_store(*, case: Case, user: User, upload: PreparedUpload, request: HttpRequest | None = None) -> Scan:
    """Store a prepared upload (`scan_upload_prepare`) as one Scan of ``case``: rows, files, audit row."""
    if not user_can_write_record(user, case.organization_id):
        raise PermissionDenied("You may not upload to this case.")
    prepared, kind, modality, details = upload.slices, upload.kind, upload.modality, upload.details
    uploaded_names = upload.uploaded_names
    written: list[str] = []
    try:
        with transaction.atomic():
            scan = Scan.objects.create(
                case=case,
                kind=kind,
                modality=modality,
                slice_count=len(prepared),
                sha256=_scan_checksum(prepared),
                uploaded_by=user,
                original_filenames=uploaded_names,
                details=details,
            )
            rows = []
            for index, (item, (thumbnail, preview)) in enumerate(zip(prepared, upload.renders, strict=True)):
                slice_ = Slice(
                    scan=scan,
                    index=index,
                    original_filename=item.name,
                    content_type=item.content_type,
                    sha256=item.sha256,
                    **item.meta,
                )
                stem = PurePosixPath(item.name).stem or "slice"
                slice_.file.save(item.name, ContentFile(item.data), save=False)
                written.append(slice_.file.name)
                slice_.thumbnail.save(f"{stem}-thumb.png", ContentFile(thumbnail), save=False)
                written.append(slice_.thumbnail.name)
                slice_.preview.save(f"{stem}-preview.png", ContentFile(preview), save=False)
                written.append(slice_.preview.name)
                rows.append(slice_)
            Slice.objects.bulk_create(rows)
            record_audit_event(
                action=AuditAction.SCAN_UPLOAD,
                actor=user,
                organization=case.organization,
                target=scan,
                request=request,
                details={
                    "case": str(case.pk),
                    "kind": kind,
                    "slices": len(prepared),
                    "sha256": scan.sha256,
                    **({"skipped_files": details["skipped_files"]} if details.get("skipped_files") else {}),
                },
            )
    except BaseException:
        _delete_files(written)
        raise
    # Callers that wrap ingestion in a bigger transaction delete these if that transaction fails (scan_files_delete).
    scan.stored_file_names = written
    return scan


def _delete_files(names: list[str]) -> None:
    storage = private_storage()
    for name in names:
        try:
            storage.delete(name)
        except OSError:
            pass


def scan_files_delete(*, scan: Scan) -> None:
    """Remove a scan's files from storage (after its rows were deleted or rolled back)."""
    names = getattr(scan, "stored_file_names", None)
    if names is None:
        names = [n for s in scan.slices.all() for n in (s.file.name, s.thumbnail.name, s.preview.name) if n]
    _delete_files(names)
