"""scans.services.scan_ingest with real PNG, JPEG and DICOM files, and the inputs it must refuse."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from django.core.exceptions import PermissionDenied
from PIL import Image

from accounts.models import AuditAction, AuditEvent
from scans.models import Scan, ScanKind, Slice
from scans.services import IngestError, scan_ingest

IDENTIFYING = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StudyDate",
]


def _zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _assert_nothing_stored(before: set[str], private_files) -> None:
    assert Scan.objects.count() == 0
    assert Slice.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.SCAN_UPLOAD).exists()
    assert private_files() == before


def test_png_becomes_a_one_slice_scan(case, clinician, head_ct_png, upload, private_files):
    scan = scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    assert scan.kind == ScanKind.IMAGE and scan.slice_count == 1
    slice_ = scan.slices.get()
    assert slice_.index == 0 and slice_.content_type == "image/png"
    assert slice_.file.read() == head_ct_png.read_bytes()  # stored as uploaded
    assert slice_.file.name.startswith(f"scans/{scan.pk.hex[:2]}/")
    with Image.open(slice_.thumbnail) as thumb:
        assert thumb.format == "PNG" and max(thumb.size) <= 256
    assert (
        AuditEvent.objects.filter(action=AuditAction.SCAN_UPLOAD, target_id=str(scan.pk), actor=clinician).count() == 1
    )


def test_sideways_jpeg_with_exif_orientation_is_read_and_described_upright(case, clinician, upload):
    """A JPEG stored sideways with EXIF Orientation 6: the slice's rows and columns, its thumbnail and the model's
    input are the upright picture, as a browser shows the stored upload."""
    import numpy as np

    from ml import preprocess
    from tests.phantoms import head_phantom_hu

    upright = preprocess.apply_window(head_phantom_hu(96)[:, 8:88], *preprocess.MODEL_WINDOW)  # 96 rows x 80 columns
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(upright, 1)).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    scan = scan_ingest(case=case, user=clinician, files=[upload(buffer.getvalue(), name="sideways.jpg")])
    slice_ = scan.slices.get()
    assert (slice_.rows, slice_.columns) == (96, 80)
    with Image.open(slice_.thumbnail) as thumb:
        assert thumb.size[1] > thumb.size[0], "upright: taller than wide"


def test_jpeg_is_detected_by_content_not_name(case, clinician, ct_ich_jpg, upload):
    scan = scan_ingest(case=case, user=clinician, files=[upload(ct_ich_jpg, name="no-extension")])
    assert scan.kind == ScanKind.IMAGE
    assert scan.slices.get().content_type == "image/jpeg"


def _check_ge_series(scan: Scan, ge_series_paths) -> None:
    assert scan.kind == ScanKind.DICOM_SERIES and scan.modality == "CT" and scan.slice_count == 28
    slices = list(scan.slices.order_by("index"))
    assert [s.index for s in slices] == list(range(28))
    positions = [s.slice_position for s in slices]
    assert all(p is not None for p in positions)
    assert positions == sorted(positions), "slices must be stored in anatomical order"
    # The original files name the order too: 01..28 follow the same direction (either way round).
    originals = [s.original_filename for s in slices]
    assert originals in (sorted(originals), sorted(originals, reverse=True))
    for slice_ in slices[:3] + slices[-2:]:
        with slice_.file.open("rb") as handle:
            ds = pydicom.dcmread(handle)
        for keyword in IDENTIFYING:
            assert keyword not in ds, f"{keyword} must be removed"
        assert not any(element.tag.is_private for element in ds.iterall())
        assert not any(element.VR in ("PN", "DA", "DT", "TM") for element in ds.iterall())
        assert ds.PatientIdentityRemoved == "YES"
        assert 0 < len(ds.DeidentificationMethod) <= 64, "LO holds at most 64 characters"
        assert "ImagePositionPatient" in ds and "RescaleSlope" in ds and "PixelSpacing" in ds
        assert ds.pixel_array.shape == (slice_.rows, slice_.columns)


def test_dicom_series_as_several_files_is_sorted_and_deidentified(case, clinician, ge_series_paths, upload):
    originals = pydicom.dcmread(ge_series_paths[0])
    assert "PatientName" in originals  # the test data does carry the tags we strip
    scan = scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    _check_ge_series(scan, ge_series_paths)


def test_dicom_series_as_zip_gives_the_same_scan(case, clinician, ge_series_paths, upload):
    archive = _zip({f"series/{p.name}": p.read_bytes() for p in ge_series_paths})
    scan = scan_ingest(case=case, user=clinician, files=[upload(archive, name="series.zip")])
    _check_ge_series(scan, ge_series_paths)
    as_files = scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    assert as_files.sha256 == scan.sha256  # same content, same checksum, however it arrived


def test_jpeg2000_compressed_series_is_accepted_and_kept_lossless(case, clinician, upload):
    """A series exported with lossless JPEG 2000 (common from PACS) is ingested: sorted, de-identified, and its
    stored slices decode to the very pixels that were uploaded."""
    from pydicom.uid import JPEG2000Lossless

    from tests.bad_uploads import ct_dicom

    series_uid = pydicom.uid.generate_uid()
    pixels, files = {}, []
    for instance in (3, 1, 2):
        ds = pydicom.dcmread(io.BytesIO(ct_dicom(instance=instance, series_uid=series_uid, size=64)))
        ds.PatientName = "Doe^Jane"
        pixels[instance] = ds.pixel_array.copy()
        ds.compress(JPEG2000Lossless)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(upload(buffer.getvalue(), name=f"slice{instance}.dcm"))
    scan = scan_ingest(case=case, user=clinician, files=files)
    assert scan.kind == ScanKind.DICOM_SERIES and scan.slice_count == 3
    for index, slice_ in enumerate(scan.slices.order_by("index")):
        with slice_.file.open("rb") as handle:
            stored = pydicom.dcmread(handle)
        assert "PatientName" not in stored
        assert stored.InstanceNumber == index + 1, "slices in anatomical order"
        assert (stored.pixel_array == pixels[index + 1]).all()


def test_ot_dicom_with_hu_pixels_is_accepted(case, clinician, data_dir, upload):
    paths = sorted((data_dir / "dicom" / "ct_ich_hu_slices" / "images").glob("*.dcm"))
    if not paths:
        pytest.skip("ct_ich_hu_slices missing")
    scan = scan_ingest(case=case, user=clinician, files=[upload(paths[0])])
    assert scan.modality == "OT" and scan.slice_count == 1


def _mr_dicom(path) -> bytes:
    ds = pydicom.dcmread(path)
    ds.Modality = "MR"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _corrupt_png(path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (lambda d: [("notes.png", b"this is plain text, not an image")], "not a supported file"),
        (lambda d: [("scan.png", _corrupt_png(d["png"]))], "damaged or incomplete"),
        (lambda d: [("mr.dcm", _mr_dicom(d["dcm"]))], "MR (not CT)"),
        (lambda d: [("empty.dcm", b"")], "is empty"),
        (lambda d: [("evil.zip", _zip({"../evil.dcm": d["dcm"].read_bytes()}))], "unsafe path"),
        (lambda d: [("abs.zip", _zip({"/etc/evil.dcm": d["dcm"].read_bytes()}))], "unsafe path"),
        (lambda d: [("bomb.zip", _zip({"bomb.dcm": b"\0" * (20 * 1024 * 1024)}))], "decompression bomb"),
        (lambda d: [("nested.zip", _zip({"inner.zip": _zip({"a.dcm": d["dcm"].read_bytes()})}))], "another ZIP"),
        (lambda d: [("a.png", d["png"].read_bytes()), ("b.dcm", d["dcm"].read_bytes())], "mixes DICOM"),
        (lambda d: [("a.png", d["png"].read_bytes()), ("b.png", d["png"].read_bytes())], "one image at a time"),
        (lambda d: [("a.dcm", d["dcm"].read_bytes()), ("a-again.dcm", d["dcm"].read_bytes())], "repeats a slice"),
    ],
    ids=[
        "non-image",
        "corrupt-png",
        "mr-dicom",
        "empty-file",
        "zip-traversal",
        "zip-absolute",
        "zip-bomb",
        "zip-nested",
        "mixed",
        "two-images",
        "duplicate-slice",
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    builder, message, case, clinician, head_ct_png, ge_series_paths, upload, private_files
):
    before = private_files()
    files = [upload(data, name=name) for name, data in builder({"png": head_ct_png, "dcm": ge_series_paths[0]})]
    with pytest.raises(IngestError) as error:
        scan_ingest(case=case, user=clinician, files=files)
    assert message in error.value.message
    _assert_nothing_stored(before, private_files)


def test_empty_upload_is_refused(case, clinician):
    with pytest.raises(IngestError, match="No file was uploaded"):
        scan_ingest(case=case, user=clinician, files=[])


def test_upload_over_the_size_limit_is_refused(settings, case, clinician, ge_series_paths, upload, private_files):
    settings.HEMO_MAX_UPLOAD_MB = 1
    before = private_files()
    with pytest.raises(IngestError, match="the limit is 1 MB"):
        scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    _assert_nothing_stored(before, private_files)


def _refused_with_another_series(case, clinician, ge_series_paths, upload, slices: int, edit) -> IngestError:
    """The refusal of ``slices`` GE slices uploaded beside one slice of another series (``edit`` makes it so)."""
    ds = pydicom.dcmread(ge_series_paths[1])
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    edit(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    files = [upload(p) for p in ge_series_paths[2 : 2 + slices]] + [upload(buffer.getvalue(), name="other.dcm")]
    with pytest.raises(IngestError) as refused:
        scan_ingest(case=case, user=clinician, files=files)
    return refused.value


def test_two_series_in_one_upload_are_refused(case, clinician, ge_series_paths, upload):
    def localizer(ds):
        ds.SeriesDescription = "Bone 0.625"
        ds.SliceThickness = 0.625
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    refused = _refused_with_another_series(case, clinician, ge_series_paths, upload, 3, localizer)
    assert refused.code == "several_series"
    message = refused.message
    assert message.startswith("The upload holds 2 different DICOM series (")
    # Each series as people tell them apart: description (or its number), slices, thickness, plane.
    assert ": 3 slices, " in message and "mm, axial" in message
    assert "Bone 0.625: 1 slice, 0.625 mm, localizer" in message
    assert message.endswith(
        "upload one series at a time: the axial one, of slices 5 mm thick or thinner where the study has a choice."
    )


def test_several_series_refusal_survives_a_malformed_tag_in_one_of_them(case, clinician, ge_series_paths, upload):
    # A PACS export with one damaged series must still be refused as "several series" (what the user can act on),
    # the unreadable facts left out of the list and a two-line description kept on one line.
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    def damaged(ds):
        for keyword, vr, value in (
            ("ImageOrientationPatient", "DS", b"a\\b\\c\\d\\e\\f "),
            ("SliceThickness", "DS", b"x.y "),
            ("SeriesDescription", "LO", b"Bone\r\nHead"),
        ):
            tag = Tag(keyword)
            ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)

    refused = _refused_with_another_series(case, clinician, ge_series_paths, upload, 2, damaged)
    assert refused.code == "several_series"
    assert "; Bone Head: 1 slice)" in refused.message


def test_failure_while_writing_leaves_no_files(case, clinician, ge_series_paths, upload, private_files, monkeypatch):
    # A storage failure half-way (disk full) must roll back the rows and remove the files already written.
    from django.core.files.storage import FileSystemStorage

    before = private_files()
    original_save = FileSystemStorage.save
    calls = {"n": 0}

    def failing_save(self, name, content, max_length=None):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("No space left on device")
        return original_save(self, name, content, max_length=max_length)

    monkeypatch.setattr(FileSystemStorage, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths[:5]])
    _assert_nothing_stored(before, private_files)


def test_auditor_may_not_upload(case, auditor, head_ct_png, upload):
    with pytest.raises(PermissionDenied):
        scan_ingest(case=case, user=auditor, files=[upload(head_ct_png)])


def test_other_organization_may_not_upload(case, other_clinician, head_ct_png, upload):
    with pytest.raises(PermissionDenied):
        scan_ingest(case=case, user=other_clinician, files=[upload(head_ct_png)])


def test_deleting_a_case_removes_its_files(
    case, clinician, head_ct_png, upload, private_files, django_capture_on_commit_callbacks
):
    before = private_files()
    scan_ingest(case=case, user=clinician, files=[upload(head_ct_png)])
    assert len(private_files() - before) == 3  # original, thumbnail, preview
    with django_capture_on_commit_callbacks(execute=True):
        case.delete()
    assert private_files() == before


# --- ZIPs of a series folder: non-image members are skipped and reported -------------------------------------------


def _zip_folder(folder) -> bytes:
    # As `zip -r series.zip ge_head_series/` makes it: every file of the folder, under the folder's name.
    return _zip({f"{folder.name}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()})


def test_zip_of_the_whole_series_folder_skips_its_license(case, clinician, ge_series_paths, upload):
    folder = ge_series_paths[0].parent
    assert (folder / "LICENSE").is_file(), "the public folder carries a LICENSE beside its 28 slices"
    scan = scan_ingest(case=case, user=clinician, files=[upload(_zip_folder(folder), name="ge_head_series.zip")])
    _check_ge_series(scan, ge_series_paths)
    assert scan.details["skipped_files"] == ["LICENSE"]
    assert scan.original_filenames == ["ge_head_series.zip"]
    upload_event = AuditEvent.objects.get(action=AuditAction.SCAN_UPLOAD, target_id=str(scan.pk))
    assert upload_event.details["skipped_files"] == ["LICENSE"]
    as_files = scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    assert as_files.sha256 == scan.sha256 and "skipped_files" not in as_files.details


def test_zip_sidecars_readmes_and_dicomdir_are_skipped(case, clinician, ge_series_paths, upload):
    members = {f"Smith_John/{p.name}": p.read_bytes() for p in ge_series_paths[:3]}
    members |= {
        "Smith_John/README.txt": b"Exported by the PACS\n",
        "Smith_John/01.json": b'{"SeriesDescription": "HEAD"}',
        "Smith_John/report.pdf": b"%PDF-1.4\n%...\n",
        "DICOMDIR": b"\0" * 128 + b"DICM" + b"\0" * 16,  # skipped by name, as before: never reported
    }
    scan = scan_ingest(case=case, user=clinician, files=[upload(_zip(members), name="export.zip")])
    assert scan.slice_count == 3
    # Base names only: a folder inside the archive may name the patient.
    assert sorted(scan.details["skipped_files"]) == ["01.json", "README.txt", "report.pdf"]


@pytest.mark.parametrize(
    ("members", "code", "words"),
    [
        ({"LICENSE": b"MIT\n", "notes.txt": b"hello"}, "no_images", "contains no DICOM file"),
        ({"DICOMDIR": b"\0" * 200, "LICENSE": b"MIT\n"}, "no_images", "found only LICENSE"),
        ({"bad.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 64}, "corrupt_dicom", "cannot be read"),
        ({"truncated.dcm": None}, "corrupt_dicom", "truncated.dcm: the DICOM image cannot be decoded"),
    ],
    ids=["only-text", "only-dicomdir-and-license", "corrupt-dicom-member", "truncated-dicom-member"],
)
def test_zip_without_usable_slices_or_with_a_corrupt_dicom_is_refused(
    members, code, words, case, clinician, ge_series_paths, upload, private_files
):
    before = private_files()
    if code == "corrupt_dicom":  # beside good slices: a damaged slice is never skipped
        if "truncated.dcm" in members:  # a real slice cut short: the header reads, the pixels do not
            members["truncated.dcm"] = ge_series_paths[2].read_bytes()[:-20000]
        members = {**{p.name: p.read_bytes() for p in ge_series_paths[:2]}, **members}
    with pytest.raises(IngestError) as error:
        scan_ingest(case=case, user=clinician, files=[upload(_zip(members), name="export.zip")])
    assert error.value.code == code and words in error.value.message, error.value.message
    _assert_nothing_stored(before, private_files)


def test_loose_non_image_files_are_still_refused(case, clinician, ge_series_paths, upload, private_files):
    # Outside a ZIP nothing is skipped: a LICENSE sent with the slices is a mistake worth saying.
    before = private_files()
    files = [upload(p) for p in ge_series_paths[:2]] + [upload(b"MIT License\n", name="LICENSE")]
    with pytest.raises(IngestError) as error:
        scan_ingest(case=case, user=clinician, files=files)
    assert error.value.code == "unsupported_type" and "LICENSE is not a supported file" in error.value.message
    _assert_nothing_stored(before, private_files)


def test_16_bit_png_of_ct_numbers_is_read_as_hu(case, clinician, upload, tmp_path):
    """A 16-bit PNG holding HU + 1024 (a common export of CT numbers) is windowed as DICOM is: its preview is the
    8-bit brain-window picture of the same slice, and the input check finds head CT (stretched from its darkest to
    its brightest pixel it would show no skull rim and a flat grey brain)."""
    import numpy as np

    from ml import preprocess
    from tests.phantoms import head_phantom_hu

    hu = np.rint(head_phantom_hu(128, bleed=True))
    buffer = io.BytesIO()
    Image.fromarray((hu + 1024).astype(np.uint16)).save(buffer, format="PNG")
    scan = scan_ingest(case=case, user=clinician, files=[upload(buffer.getvalue(), name="slice16.png")])
    assert scan.kind == ScanKind.IMAGE and scan.details["input_check"]["verdict"] == "ok"
    slice_ = scan.slices.get()
    assert slice_.file.read() == buffer.getvalue()  # stored as uploaded
    with Image.open(slice_.preview) as preview:
        shown = np.asarray(preview.convert("L"))
    np.testing.assert_array_equal(shown, preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))


def _enhanced_series(count: int = 4):
    import numpy as np

    from tests.phantoms import head_phantom_hu

    return [np.rint(head_phantom_hu(64, bleed=i % 2 == 1, seed=i)) for i in range(count)]


@pytest.mark.parametrize("compress", [False, True], ids=["uncompressed", "RLE"])
def test_enhanced_ct_multi_frame_file_becomes_an_ordered_deidentified_series(case, clinician, upload, compress):
    """One Enhanced CT file holding a whole series (frames stored out of order, per-frame rescale) is ingested as
    that series: one single-frame slice per frame, in anatomical order, de-identified, each decoding to its HU."""
    from ml import dicom as ml_dicom
    from tests.phantoms import dicom_bytes, enhanced_ct

    hus = _enhanced_series()
    intercepts = [-1024.0, -1000.0, -1024.0, -2000.0]
    data = dicom_bytes(enhanced_ct(hus, frame_order=[2, 0, 3, 1], intercepts=intercepts, compress=compress))
    scan = scan_ingest(case=case, user=clinician, files=[upload(data, name="enhanced.dcm")])
    assert scan.kind == ScanKind.DICOM_SERIES and scan.modality == "CT" and scan.slice_count == 4
    assert scan.details["input_check"]["verdict"] == "ok"
    slices = list(scan.slices.order_by("index"))
    assert [s.slice_position for s in slices] == [0.0, 5.0, 10.0, 15.0]
    assert [s.original_filename for s in slices] == [f"enhanced.dcm frame {n}" for n in (2, 4, 1, 3)]
    for slice_, hu in zip(slices, hus, strict=True):
        with slice_.file.open("rb") as handle:
            stored = pydicom.dcmread(handle)
        assert "PatientName" not in stored and "PatientID" not in stored and stored.PatientIdentityRemoved == "YES"
        assert "NumberOfFrames" not in stored and stored.pixel_array.shape == (64, 64)
        assert (ml_dicom.to_hu(stored) == hu).all()


def test_single_frame_enhanced_ct_is_stored_with_the_rescale_of_its_functional_groups(case, clinician, upload):
    from ml import dicom as ml_dicom
    from tests.phantoms import dicom_bytes, enhanced_ct

    (hu,) = _enhanced_series(1)
    data = dicom_bytes(enhanced_ct([hu], intercepts=[-2000.0]))
    scan = scan_ingest(case=case, user=clinician, files=[upload(data, name="one.dcm")])
    (slice_,) = scan.slices.all()
    assert slice_.original_filename == "one.dcm"
    with slice_.file.open("rb") as handle:
        stored = pydicom.dcmread(handle)
    assert "SharedFunctionalGroupsSequence" not in stored and (ml_dicom.to_hu(stored) == hu).all()


def test_enhanced_ct_with_more_frames_than_slices_allowed_is_refused(case, clinician, upload, private_files, settings):
    from tests.phantoms import dicom_bytes, enhanced_ct

    settings.HEMO_MAX_SLICES = 3
    before = private_files()
    with pytest.raises(IngestError) as refused:
        scan_ingest(case=case, user=clinician, files=[upload(dicom_bytes(enhanced_ct(_enhanced_series())))])
    assert refused.value.code == "too_many_slices" and "holds 4 slices counting the frames" in str(refused.value)
    _assert_nothing_stored(before, private_files)


@pytest.mark.parametrize("thickness, verdict", [(10.0, "warn"), (5.0, "ok")])
def test_a_series_of_thick_slices_is_analysed_with_a_warning(case, clinician, upload, thickness, verdict):
    """The model learnt from 5 mm slices and misses more bleeds on thicker ones: a 10 mm series is accepted and
    flagged."""
    from tests.bad_uploads import ct_dicom

    files = [
        upload(
            ct_dicom(instance=i, size=64, SliceThickness=thickness, ImagePositionPatient=[0, 0, thickness * i]),
            f"s/{i}.dcm",
        )
        for i in range(1, 5)
    ]
    scan = scan_ingest(case=case, user=clinician, files=files)
    check = scan.details["input_check"]
    assert check["verdict"] == verdict and check["max_slice_thickness_mm"] == thickness
    if verdict == "warn":
        assert scan.input_warning.startswith("The slices are 10 mm thick; the model learnt from 5 mm slices")
    else:
        assert scan.input_warning == ""


def test_the_real_ge_series_with_half_its_slices_7_mm_thick_is_flagged(case, clinician, ge_series_paths, upload):
    """The GE sample: 14 slices of 4 mm (posterior fossa) under 14 of 7 mm. Analysed, with a warning."""
    scan = scan_ingest(case=case, user=clinician, files=[upload(p) for p in ge_series_paths])
    check = scan.details["input_check"]
    assert check["verdict"] == "warn" and check["thick_slices"] == 14 and check["max_slice_thickness_mm"] == 7.0
    assert scan.input_warning.startswith("14 of the 28 slices are 7 mm thick")


def test_names_dates_and_times_are_removed_at_any_depth_whatever_their_keyword(case, clinician, upload):
    """Beyond the keyword list: every person name, date and time (a verifying observer nested in a sequence, a
    calibration date), and descriptive request tags such as RequestingService."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.bad_uploads import ct_dicom

    ds = pydicom.dcmread(io.BytesIO(ct_dicom(size=64)))
    ds.RequestingService = "Neurosurgery, Dr Jones' team"
    ds.DateOfLastCalibration = "20260101"
    ds.TimeOfLastCalibration = "101500"
    observer = Dataset()
    observer.VerifyingObserverName = "Jones^Anna"
    observer.VerificationDateTime = "20261127101500"
    observer.VerifyingOrganization = "Hospital"
    ds.VerifyingObserverSequence = Sequence([observer])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    scan = scan_ingest(case=case, user=clinician, files=[upload(buffer.getvalue(), "named.dcm")])
    with scan.slices.get().file.open("rb") as handle:
        stored = pydicom.dcmread(handle)
    for keyword in ("RequestingService", "DateOfLastCalibration", "TimeOfLastCalibration"):
        assert keyword not in stored, keyword
    nested = stored.VerifyingObserverSequence[0]
    assert "VerifyingObserverName" not in nested and "VerificationDateTime" not in nested
    assert nested.VerifyingOrganization == "Hospital"  # not a name, date or time: kept
    assert stored.ImagePositionPatient == ds.ImagePositionPatient and stored.pixel_array.shape == (64, 64)


def test_an_unknown_public_tag_in_an_implicit_vr_file_is_removed(case, clinician, upload):
    """Implicit VR: a public tag that pydicom's dictionary does not know is read as UN, and what it holds (here a
    date) cannot be judged, so it goes too."""
    from pydicom.uid import ImplicitVRLittleEndian

    from tests.bad_uploads import ct_dicom

    ds = pydicom.dcmread(io.BytesIO(ct_dicom(size=64)))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.add_new(0x00189FFE, "DA", "20240131")  # not in the dictionary
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    assert pydicom.dcmread(io.BytesIO(buffer.getvalue()))[0x00189FFE].VR == "UN"
    scan = scan_ingest(case=case, user=clinician, files=[upload(buffer.getvalue(), "implicit.dcm")])
    with scan.slices.get().file.open("rb") as handle:
        stored = pydicom.dcmread(handle)
    assert 0x00189FFE not in stored and stored.pixel_array.shape == (64, 64)
