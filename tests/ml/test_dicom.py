"""DICOM reading: HU arithmetic, windowing, ordering (tilt, uneven spacing, shuffled files), real files."""

from __future__ import annotations

import io
import random

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ml import dicom, preprocess
from tests.ml.conftest import head_phantom_hu
from tests.phantoms import dicom_bytes


def make_ct(
    hu: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    position=(0.0, 0.0, 0.0),
    orientation=(1, 0, 0, 0, 1, 0),
    instance: int = 1,
    geometry: bool = True,
) -> FileDataset:
    """A minimal CT dataset whose stored pixels give `hu` after rescale."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    stored = np.rint((hu - intercept) / slope).astype(np.int16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.WindowCenter = pydicom.multival.MultiValue(pydicom.valuerep.DSfloat, [40, 40])
    ds.WindowWidth = pydicom.multival.MultiValue(pydicom.valuerep.DSfloat, [80, 80])
    if geometry:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    ds.PixelData = stored.tobytes()
    return ds


to_bytes = dicom_bytes  # a dataset as the bytes of a DICOM file


def test_window_arithmetic_on_known_hu():
    hu = np.array([-1000, 0, 20, 40, 60, 80, 1000], np.float32)
    out = preprocess.apply_window(hu, 40, 80)
    # 0 HU is the window's lower edge, 80 HU the upper one; linear in between (40 HU -> 127.5 -> 128).
    assert out.tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert out.dtype == np.uint8
    bone = preprocess.apply_window(np.array([-800, 600, 2000], np.float32), *preprocess.BONE_WINDOW)
    assert bone.tolist() == [0, 128, 255]


def test_to_hu_applies_slope_and_intercept_with_signed_pixels():
    hu = np.array([[-2048, -1000], [35, 3000]], np.float32)
    ds = pydicom.dcmread(io.BytesIO(to_bytes(make_ct(hu, slope=2.0, intercept=-1024.0))))
    out = dicom.to_hu(ds)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, hu, atol=1.0)


def test_dicom_slice_goes_through_the_model_window():
    hu = np.rint(head_phantom_hu(128))  # integer HU: stored pixels represent them exactly
    ds_bytes = to_bytes(make_ct(hu))
    from_dicom = preprocess.load_slice(io.BytesIO(ds_bytes))
    np.testing.assert_array_equal(from_dicom, preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))


@pytest.mark.parametrize("syntax", ["JPEG2000Lossless", "RLELossless"])
def test_losslessly_compressed_dicom_gives_the_same_model_input(syntax):
    """PACS exports are often compressed: lossless JPEG 2000 (decoded by pylibjpeg-openjpeg) and RLE (pydicom's own
    decoder) give exactly the HU and model input of the uncompressed file."""
    import pydicom.uid

    hu = np.rint(head_phantom_hu(128, bleed=True))
    plain = make_ct(hu)
    compressed = make_ct(hu)
    compressed.compress(getattr(pydicom.uid, syntax))
    data = to_bytes(compressed)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    assert len(data) < len(to_bytes(plain))
    np.testing.assert_array_equal(dicom.to_hu(pydicom.dcmread(io.BytesIO(data))), hu)
    np.testing.assert_array_equal(
        preprocess.load_slice(io.BytesIO(data)), preprocess.load_slice(io.BytesIO(to_bytes(plain)))
    )


def _tilted_series(n=12, tilt_deg=18.5, seed=0):
    rng = np.random.default_rng(seed)
    t = np.radians(tilt_deg)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(t), np.sin(t)])
    normal = np.cross(row, col)
    gaps = rng.uniform(1.0, 7.0, size=n)  # uneven spacing, like the GE series
    offsets = np.cumsum(gaps)
    datasets = []
    for i, d in enumerate(offsets):
        # Positions along the tilted normal, plus an in-plane shift that makes raw z misleading.
        pos = d * normal + (i % 3) * 40.0 * col
        datasets.append(
            make_ct(np.full((4, 4), float(i)), position=tuple(pos), orientation=(*row, *col), instance=n - i)
        )  # InstanceNumber deliberately reversed: geometry must win
    return datasets


def test_sort_follows_slice_normal_with_tilt_uneven_spacing_and_shuffled_files():
    series = _tilted_series()
    order = list(range(len(series)))
    random.Random(3).shuffle(order)
    shuffled = [series[i] for i in order]
    ranked = [shuffled[i] for i in dicom.sort_datasets(shuffled)]
    assert [float(dicom.to_hu(ds)[0, 0]) for ds in ranked] == [float(i) for i in range(len(series))]
    keys = [dicom.sort_key(ds)[1] for ds in ranked]
    assert keys == sorted(keys)


def test_sort_falls_back_to_instance_number_without_geometry():
    series = [make_ct(np.full((4, 4), float(i)), instance=i + 1, geometry=False) for i in range(6)]
    shuffled = series[::-1]
    ranked = [shuffled[i] for i in dicom.sort_datasets(shuffled)]
    assert [int(ds.InstanceNumber) for ds in ranked] == [1, 2, 3, 4, 5, 6]


def test_sort_follows_positions_without_an_orientation():
    """ImagePositionPatient without ImageOrientationPatient (and no InstanceNumber): the positions still order the
    series, along the axis they lie on, foot to head as with an orientation; `positions` agrees."""
    series = [make_ct(np.full((4, 4), float(i)), position=(0.0, 0.0, 40.0 - 4.5 * i)) for i in range(9)]
    for ds in series:
        del ds.ImageOrientationPatient, ds.InstanceNumber
    shuffled = [series[i] for i in (4, 0, 7, 2, 8, 5, 1, 6, 3)]
    ranked = [shuffled[i] for i in dicom.sort_datasets(shuffled)]
    assert [float(dicom.to_hu(ds)[0, 0]) for ds in ranked] == [8.0, 7, 6, 5, 4, 3, 2, 1, 0]  # z rising
    assert dicom.positions(ranked) == pytest.approx([4.0 + 4.5 * k for k in range(9)])


def test_sort_uses_instance_number_for_every_slice_when_one_lacks_its_position():
    """A slice without ImagePositionPatient cannot be placed among positioned ones (it used to go last): the whole
    series is then ordered by InstanceNumber, and no slice gets a position."""
    series = [make_ct(np.full((4, 4), float(i)), position=(0.0, 0.0, 5.0 * i), instance=i + 1) for i in range(6)]
    del series[2].ImagePositionPatient
    shuffled = series[::-1]
    ranked = [shuffled[i] for i in dicom.sort_datasets(shuffled)]
    assert [int(ds.InstanceNumber) for ds in ranked] == [1, 2, 3, 4, 5, 6]
    assert dicom.positions(ranked) == [None] * 6
    # Without InstanceNumbers to fall back on, the positioned slices keep their order and the other one follows.
    for ds in series:
        del ds.InstanceNumber
    ranked = [shuffled[i] for i in dicom.sort_datasets(shuffled)]
    assert [float(dicom.to_hu(ds)[0, 0]) for ds in ranked] == [0.0, 1, 3, 4, 5, 2]
    assert dicom.positions(ranked) == [0.0, 5.0, 15.0, 20.0, 25.0, None]


def test_a_colour_picture_marked_ct_is_refused_from_its_header():
    ds = make_ct(np.zeros((4, 4)))
    assert dicom.ct_header_rejection(ds) is None
    ds.SamplesPerPixel = 3
    assert "holds a colour picture" in dicom.ct_header_rejection(ds)


def test_sort_keeps_file_order_without_geometry_or_instance_number(tmp_path):
    """No position and no InstanceNumber (as in the CT-ICH HU exports): the natural file-name order stands, not the
    SOPInstanceUID text order ("...10" sorts before "...9")."""
    for i in range(11):
        ds = make_ct(np.full((4, 4), float(i)), geometry=False)
        del ds.InstanceNumber
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.{i + 1}"
        ds.save_as(tmp_path / f"slice{i + 1}.dcm")
    slices, names = preprocess.load_scan(tmp_path)
    assert names == [f"slice{i + 1}.dcm" for i in range(11)]


def test_series_folder_on_disk_is_ordered(tmp_path):
    series = _tilted_series(n=8, seed=1)
    names = [f"{i:02d}.dcm" for i in range(len(series))]
    random.Random(5).shuffle(names)  # file names carry no order
    for ds, name in zip(series, names, strict=True):
        (tmp_path / name).write_bytes(to_bytes(ds))
    slices, ordered_names = preprocess.load_scan(tmp_path)
    assert len(slices) == 8
    assert ordered_names == names


def test_non_dicom_raises_clear_error():
    with pytest.raises(dicom.DicomError):
        dicom.read_dataset(io.BytesIO(b"this is not a dicom file at all" * 10))


def test_multi_valued_window_center():
    ds = make_ct(np.zeros((4, 4)))
    assert dicom.first_value(ds.WindowCenter) == 40.0
    assert dicom.first_value(None) is None


# ---- the real files under ../shared/data/dicom -----------------------------------------------------------


def test_ge_head_series_loads_28_ordered_slices(dicom_root):
    files = sorted((dicom_root / "ge_head_series").glob("*.dcm"))
    assert len(files) == 28
    shuffled = files[:]
    random.Random(0).shuffle(shuffled)
    datasets = dicom.read_series(shuffled)
    positions = [dicom.sort_key(ds)[1] for ds in datasets]
    assert (np.diff(positions) > 0).all(), "slices must be strictly ordered along the normal"
    gaps = np.diff(positions)
    assert gaps.max() / gaps.min() > 2, "this series has uneven spacing; ordering must not assume a constant step"
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 29))
    slices, _ = preprocess.load_scan(dicom_root / "ge_head_series")
    assert len(slices) == 28 and all(s.dtype == np.uint8 and s.ndim == 2 for s in slices)


def test_rsna_slices_load_as_seven_singles(dicom_root):
    files = sorted((dicom_root / "rsna_slices").glob("*.dcm"))
    assert len(files) == 7
    for f in files:
        ds = dicom.read_dataset(f)
        assert dicom.is_ct(ds)
        hu = dicom.to_hu(ds)
        assert hu.ndim == 2 and hu.min() >= -3100 and hu.max() < 5000
        s = preprocess.load_slice(f)
        assert s.dtype == np.uint8 and s.shape == hu.shape
        assert 0.05 < (s > 0).mean() < 0.95, "a head in the brain window: neither empty nor saturated"


def test_ct_ich_hu_slices_load(dicom_root):
    files = sorted((dicom_root / "ct_ich_hu_slices" / "images").glob("*.dcm"))
    assert len(files) == 20
    for f in files:
        ds = dicom.read_dataset(f)
        assert dicom.is_ct_like(ds)
        s = preprocess.load_slice(f)
        assert s.shape == (512, 512) and s.dtype == np.uint8
        x = preprocess.prepare(s, size=96)
        assert x.shape == (1, 96, 96) and x.dtype == np.float32


def _phantom_series(n: int = 5) -> list[np.ndarray]:
    # Each slice its own: a bleed of growing size, so a frame put in the wrong place shows.
    return [np.rint(head_phantom_hu(48, bleed=i > 0, seed=i)) + i for i in range(n)]


@pytest.mark.parametrize("compress", [False, True], ids=["uncompressed", "RLE"])
def test_enhanced_ct_is_split_into_ordered_ct_slices(tmp_path, compress):
    """A multi-frame Enhanced CT, its frames stored out of order with per-frame rescale, gives the same ordered HU
    slices as the series it holds; each frame is a plain single-frame CT with its own geometry and UID."""
    from tests.phantoms import enhanced_ct

    hus = _phantom_series()
    intercepts = [-1024.0, -1000.0, -1024.0, -2048.0, -1024.0]
    ds = enhanced_ct(hus, frame_order=[3, 0, 4, 1, 2], intercepts=intercepts, compress=compress)
    path = tmp_path / "enhanced.dcm"
    path.write_bytes(dicom_bytes(ds))
    frames = dicom.split_frames(dicom.read_dataset(path))
    assert len(frames) == 5
    assert len({str(f.SOPInstanceUID) for f in frames}) == 5 and [f.InstanceNumber for f in frames] == [1, 2, 3, 4, 5]
    for frame in frames:
        assert str(frame.SOPClassUID) == str(CTImageStorage) and "NumberOfFrames" not in frame
        assert "PerFrameFunctionalGroupsSequence" not in frame and list(frame.ImageOrientationPatient) == [
            1,
            0,
            0,
            0,
            1,
            0,
        ]
        again = pydicom.dcmread(io.BytesIO(to_bytes(frame)))  # writes and reads back as a classic CT file
        assert str(again.file_meta.TransferSyntaxUID) == str(ExplicitVRLittleEndian)
    ordered = [frames[i] for i in dicom.sort_datasets(frames)]
    assert [float(f.ImagePositionPatient[2]) for f in ordered] == [0.0, 5.0, 10.0, 15.0, 20.0]
    for frame, hu in zip(ordered, hus, strict=True):
        np.testing.assert_array_equal(dicom.to_hu(frame), hu)
    # ml.preprocess reads the file as its series, in order, as it would the five slices as files.
    slices, names = preprocess.load_scan(path)
    assert [n.split()[-1] for n in names] == ["2", "4", "5", "1", "3"]  # frame numbers in anatomical order
    for got, hu in zip(slices, hus, strict=True):
        np.testing.assert_array_equal(got, preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "enhanced.dcm").write_bytes(path.read_bytes())
    assert all(np.array_equal(a, b) for a, b in zip(preprocess.load_scan(folder)[0], slices, strict=True))


def test_enhanced_ct_frame_type_says_which_frame_is_a_localizer():
    # Enhanced CT states per frame what it is (CTImageFrameTypeSequence > FrameType); a split frame must keep it as
    # its ImageType, or a scout frame would be read (or refused as a reformat) as if it were a slice.
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.phantoms import enhanced_ct

    ds = enhanced_ct(_phantom_series(3))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "MIXED"]
    for index, frame_type in enumerate(("LOCALIZER", "AXIAL", "AXIAL")):
        item = Dataset()
        item.FrameType = ["ORIGINAL", "PRIMARY", frame_type, "NONE"]
        ds.PerFrameFunctionalGroupsSequence[index].CTImageFrameTypeSequence = Sequence([item])
    frames = dicom.split_frames(dicom.read_dataset(io.BytesIO(dicom_bytes(ds))))
    assert [dicom.is_localizer(f) for f in frames] == [True, False, False]
    assert [dicom.is_axial_slice(f) for f in frames] == [False, True, True]


def test_single_frame_enhanced_ct_is_read_through_its_functional_groups(tmp_path):
    # One frame, but its rescale and geometry live in the functional groups: read as a classic slice, it would decode
    # with intercept 0 (here 2000 HU off).
    from tests.phantoms import enhanced_ct

    hu = _phantom_series(1)[0]
    path = tmp_path / "one.dcm"
    path.write_bytes(dicom_bytes(enhanced_ct([hu], intercepts=[-2000.0])))
    (frame,) = dicom.split_frames(dicom.read_dataset(path))
    assert "SharedFunctionalGroupsSequence" not in frame and float(frame.RescaleIntercept) == -2000.0
    np.testing.assert_array_equal(dicom.to_hu(frame), hu)
    slices, names = preprocess.load_scan(path)
    assert names == ["one.dcm"]
    np.testing.assert_array_equal(slices[0], preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))


def test_frame_type_comes_from_the_shared_group_and_only_when_it_says_what_the_frame_is():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.phantoms import enhanced_ct

    def frame_type(*values) -> Sequence:
        item = Dataset()
        if values:
            item.FrameType = list(values)
        return Sequence([item])

    ds = enhanced_ct(_phantom_series(2))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]
    ds.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence = frame_type("ORIGINAL", "PRIMARY", "AXIAL", "NONE")
    ds.PerFrameFunctionalGroupsSequence[0].CTImageFrameTypeSequence = frame_type()  # no FrameType: the shared one
    ds.PerFrameFunctionalGroupsSequence[1].CTImageFrameTypeSequence = frame_type("ORIGINAL", "PRIMARY")  # too short
    first, second = dicom.split_frames(dicom.read_dataset(io.BytesIO(dicom_bytes(ds))))
    assert not dicom.is_localizer(first)  # the shared FrameType, AXIAL
    assert not dicom.is_localizer(second)  # the too-short one skipped, so the shared one again
    del ds.SharedFunctionalGroupsSequence[0].CTImageFrameTypeSequence
    _, second = dicom.split_frames(dicom.read_dataset(io.BytesIO(dicom_bytes(ds))))
    assert dicom.is_localizer(second)  # nothing usable per frame: the file's own ImageType stands


def test_a_folder_holds_one_series_and_files_without_an_image_are_passed_over(tmp_path):
    from pydicom.uid import generate_uid

    from tests.phantoms import enhanced_ct

    series_uid = generate_uid()
    for i in range(3):
        ds = make_ct(np.full((8, 8), float(i)), position=(0.0, 0.0, 5.0 * i), instance=i + 1)
        ds.SeriesInstanceUID = series_uid
        (tmp_path / f"{i}.dcm").write_bytes(to_bytes(ds))
    report = make_ct(np.zeros((8, 8)))
    del report.PixelData  # a DICOMDIR or a structured report beside the slices
    (tmp_path / "DICOMDIR").write_bytes(to_bytes(report))
    slices, names = preprocess.load_scan(tmp_path)
    assert names == ["0.dcm", "1.dcm", "2.dcm"]
    other = make_ct(np.zeros((8, 8)), position=(0.0, 0.0, 20.0), instance=4)
    other.SeriesInstanceUID = generate_uid()
    (tmp_path / "3.dcm").write_bytes(to_bytes(other))
    with pytest.raises(ValueError, match="holds 2 DICOM series; give one series per folder"):
        preprocess.load_scan(tmp_path)
    (tmp_path / "3.dcm").unlink()
    broken = enhanced_ct(_phantom_series(2))
    broken.BitsAllocated = 8  # a multi-frame image that is not CT
    (tmp_path / "4.dcm").write_bytes(to_bytes(broken))
    with pytest.raises(dicom.DicomError, match="^4.dcm: a multi-frame image"):
        preprocess.load_scan(tmp_path)


def test_multi_frame_limits_are_checked_before_decoding():
    from tests.phantoms import enhanced_ct

    ds = enhanced_ct(_phantom_series(3))
    with pytest.raises(dicom.DicomTooLarge, match="3 frames"):
        dicom.split_frames(ds, max_frames=2)
    with pytest.raises(dicom.DicomTooLarge, match="48x48"):
        dicom.split_frames(ds, max_pixels=1000)
    with pytest.raises(dicom.DicomTooLarge, match="3 frames of 48x48 pixels are more than the limit of 6,911"):
        dicom.split_frames(ds, max_total_pixels=3 * 48 * 48 - 1)
    assert len(dicom.split_frames(ds, max_total_pixels=3 * 48 * 48)) == 3
    # Frames past a short per-frame sequence would lose their position and rescale: refused, not guessed.
    whole = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = whole[:2]
    with pytest.raises(dicom.DicomError, match="describes 2 frames .* holds 3"):
        dicom.split_frames(ds)
    ds.PerFrameFunctionalGroupsSequence = whole
    del ds.PixelData
    with pytest.raises(dicom.DicomError, match="no pixel data"):
        dicom.split_frames(ds)
    single = make_ct(_phantom_series(1)[0])
    assert dicom.split_frames(single) == [single]


def test_frame_uids_are_unique_across_files_and_the_class_is_ct_when_missing():
    """Frame UIDs derive from the file's UID and the frame number without ambiguity: files "...4.1" and "...4.11" of
    one series (sequential UIDs are common) share none. A multi-frame file without a SOP class gets CT's."""
    from tests.phantoms import enhanced_ct

    hus = _phantom_series(12)
    uids = []
    for source in ("1.2.3.4.1", "1.2.3.4.11"):
        ds = enhanced_ct(hus)
        ds.SOPInstanceUID = source
        uids += [str(f.SOPInstanceUID) for f in dicom.split_frames(ds)]
    assert len(set(uids)) == 24
    ds = enhanced_ct(hus[:2])
    del ds.SOPClassUID
    frames = dicom.split_frames(ds)
    assert all(str(f.SOPClassUID) == str(CTImageStorage) for f in frames)
    assert all("ImplementationClassUID" in f.file_meta and "FileMetaInformationVersion" in f.file_meta for f in frames)


def test_plane_follows_the_slice_normal_and_a_gantry_tilt_stays_axial():
    import math

    hu = np.zeros((8, 8))
    assert dicom.plane(make_ct(hu)) == "axial"
    for tilt in (18.5, 30.0, 44.0):
        c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
        assert dicom.plane(make_ct(hu, orientation=(1, 0, 0, 0, c, s))) == "axial", tilt
    assert dicom.plane(make_ct(hu, orientation=(1, 0, 0, 0, 0, -1))) == "coronal"
    assert dicom.plane(make_ct(hu, orientation=(0, 1, 0, 0, 0, -1))) == "sagittal"
    assert dicom.plane(make_ct(hu, geometry=False)) is None


def test_localizer_is_told_by_its_image_type():
    scout = make_ct(np.zeros((8, 8)))
    assert not dicom.is_localizer(scout)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert dicom.is_localizer(dicom.read_dataset(io.BytesIO(to_bytes(scout))))
    scout.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert not dicom.is_localizer(scout)
    scout.ImageType = "LOCALIZER"
    assert dicom.is_localizer(scout)


def test_every_real_slice_is_axial_and_none_is_a_localizer(dicom_root):
    files = sorted(dicom_root.rglob("*.dcm"))
    assert files
    for path in files:
        ds = dicom.read_dataset(path, stop_before_pixels=True)
        assert dicom.plane(ds) in ("axial", None) and not dicom.is_localizer(ds), path.name
