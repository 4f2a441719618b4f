"""Thin-slice DICOM series are read as slabs of the model's 5 mm (ml.slabs): the plan, the HU averaging, and the
Predictor's per-slice answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import dicom, paths, preprocess, slabs
from tests.ml.test_dicom import make_ct
from tests.phantoms import dicom_bytes, head_phantom_hu


def test_series_at_the_training_thickness_or_near_it_is_read_slice_by_slice():
    assert slabs.plan([i * 5.0 for i in range(30)]) is None
    assert slabs.plan([i * 3.75 for i in range(30)]) is None  # 5 / 3.75 rounds to one slice per slab
    # Two slices 3.3 mm apart would make a 6.6 mm slab, over MAX_SLAB_MM: read slice by slice.
    assert slabs.plan([i * 3.3 for i in range(30)]) is None
    assert slabs.plan([i * 3.0 for i in range(30)]).slices_per_slab == 2  # 6 mm, the most allowed
    assert slabs.plan([0.0]) is None
    assert slabs.plan([]) is None


def test_thin_series_is_grouped_in_slabs_of_about_five_mm():
    plan = slabs.plan([i * 1.0 for i in range(30)])
    assert plan.slices_per_slab == 5 and plan.groups == [list(range(k, k + 5)) for k in range(0, 30, 5)]
    assert plan.averaged == plan.groups
    assert plan.to_dict() == {
        "slab_mm": 5.0,
        "spacing_mm": 1.0,
        "slices_per_slab": 5,
        "averaged_per_slab": 5,
        "thickness_mm": None,
        "overlap": False,
        "slabs": 6,
        "slices": 30,
    }
    # Half-way values round up (not to even: 2 mm -> 3 slices, 6 mm); otherwise the nearest count (1.2 mm -> 4).
    assert slabs.plan([i * 2.0 for i in range(12)]).slices_per_slab == 3
    assert slabs.plan([i * 1.2 for i in range(12)]).slices_per_slab == 4
    assert slabs.plan([i * 3.2 for i in range(12)]) is None  # 2 slices would be 6.4 mm: never past 6 mm
    # 2.5 mm: two per slab; feet-first (descending positions) reads the same way.
    assert slabs.plan([-i * 2.5 for i in range(6)]).groups == [[0, 1], [2, 3], [4, 5]]


def test_a_short_last_slab_joins_the_one_before():
    plan = slabs.plan([i * 0.625 for i in range(17)])  # 8 per slab: 0-7, 8-15, and 16 alone
    assert plan.slices_per_slab == 8 and plan.groups == [list(range(8)), list(range(8, 17))]
    plan = slabs.plan([i * 1.0 for i in range(13)])  # 5 per slab: 0-4, 5-9, and 10-12 (3 of 5) stays
    assert plan.groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12]]


def test_slabs_follow_positions_across_a_gap():
    # 1 mm apart with a 4 mm gap after 4: slabs are 5 mm of position (0-4, 5-9, 10-14 mm), not 5 slices each.
    plan = slabs.plan([0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14])
    assert plan.groups == [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]]
    # No slab holds slices on both sides of a gap wider than a slab, a short last one included.
    assert slabs.plan([0, 1, 2, 3, 4, 12, 13, 14, 15, 16]).groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert slabs.plan([*range(10), 50.0]).groups == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10]]


def test_overlapping_slices_average_only_the_central_ones_that_cover_five_mm():
    # 5 mm slices every 2.5 mm: one of each pair is already a 5 mm slab (averaging both would blur over 7.5 mm).
    plan = slabs.plan([i * 2.5 for i in range(8)], thickness_mm=5.0)
    assert plan.groups == [[0, 1], [2, 3], [4, 5], [6, 7]] and plan.averaged == [[0], [2], [4], [6]]
    # 1.25 mm slices every 0.625 mm: 8 per slab, of which the central 7 cover 5 mm.
    plan = slabs.plan([i * 0.625 for i in range(16)], thickness_mm=1.25)
    assert plan.averaged == [list(range(0, 7)), list(range(8, 15))]
    assert plan.to_dict()["averaged_per_slab"] == 7 and plan.to_dict()["thickness_mm"] == 1.25
    # Contiguous slices (thickness = spacing) are all averaged.
    assert slabs.plan([i * 1.0 for i in range(10)], thickness_mm=1.0).averaged == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_describe_says_how_a_series_was_read():
    assert slabs.describe({}) == ""
    text = slabs.describe(slabs.plan([i * 1.0 for i in range(15)]).to_dict())
    assert text.startswith(
        "3 slabs of up to 5 mm, the slice thickness the model was trained on: the 15 slices are 1 mm"
    )
    assert "(5 per slab, averaged in HU)" in text and "its slab's probability and heat map" in text
    text = slabs.describe(slabs.plan([i * 2.5 for i in range(8)], thickness_mm=5.0).to_dict())
    assert "5 mm thick and overlap, so only the central 1 of each slab is read" in text
    # A short series (one slab, smaller than slices_per_slab), with or without a stated thickness: no overlap claimed.
    for thickness in (None, 1.0):
        text = slabs.describe(slabs.plan([0.0, 1.0, 2.0], thickness_mm=thickness).to_dict())
        assert text.startswith("1 slab of up to 5 mm") and "overlap" not in text
        assert text.endswith("A single slab is judged like a single image, at the image threshold.")


@pytest.mark.parametrize(
    "positions",
    [[0.0, 1.0, None, 3.0], [0.0, 1.0, 1.0, 2.0], [0.0, 2.0, 1.0, 3.0], [0.0, 1.0, float("nan"), 3.0]],
    ids=["missing", "repeated", "out-of-order", "nan"],
)
def test_no_slabs_without_one_ordered_set_of_positions(positions):
    assert slabs.plan(positions) is None


def test_expand_gives_each_slice_its_slab_value():
    plan = slabs.plan([i * 1.0 for i in range(12)])  # 5 per slab: 0-4, 5-9, 10-11 (2 of 5, joins the second)
    assert plan.groups == [[0, 1, 2, 3, 4], list(range(5, 12))]
    assert plan.expand([0.1, 0.9]) == [0.1] * 5 + [0.9] * 7
    with pytest.raises(ValueError, match="3 values for 2 slabs"):
        plan.expand([0.1, 0.2, 0.3])


def test_mean_image_refuses_slices_of_different_sizes():
    with pytest.raises(ValueError, match="different sizes"):
        slabs.mean_image([np.zeros((4, 4)), np.zeros((4, 5))])


def _thin_series(n: int, spacing: float, *, size: int = 64) -> list:
    hus = [head_phantom_hu(size, bleed=n // 3 <= i < n // 2, seed=i) for i in range(n)]
    return [make_ct(hu, position=(0.0, 0.0, i * spacing), instance=i + 1) for i, hu in enumerate(hus)]


def test_positions_follow_the_slice_normal_and_are_none_without_geometry():
    series = _thin_series(3, 1.25)
    assert dicom.positions(series) == pytest.approx([0.0, 1.25, 2.5])
    assert dicom.positions([make_ct(np.zeros((8, 8)), geometry=False)]) == [None]


def test_slice_thickness_is_the_median_of_the_stated_ones():
    series = _thin_series(3, 1.0)
    assert dicom.slice_thickness(series) is None
    for ds, value in zip(series, ["1.25", "1.25", "0"], strict=True):
        ds.SliceThickness = value
    assert dicom.slice_thickness(series) == 1.25


def test_overlapping_dicom_series_reads_the_central_slices_of_each_slab():
    series = _thin_series(8, 2.5)
    for ds in series:
        ds.SliceThickness = 5.0
    slices, plan = preprocess.series_slices(series, slab_mm=5.0)
    assert plan.averaged == [[0], [2], [4], [6]]
    assert all(
        np.array_equal(s, preprocess.dicom_to_slice(series[i])) for s, i in zip(slices, [0, 2, 4, 6], strict=True)
    )


def test_slabs_average_in_hu_before_the_window():
    """A thick reconstruction averages CT numbers: bone (1000 HU) over brain (0 HU) is 500 HU, white in the model
    window, where averaging the windowed slices would give mid grey."""
    bone, brain = np.full((8, 8), 1000.0, np.float32), np.zeros((8, 8), np.float32)
    series = [make_ct(hu, position=(0, 0, i * 1.0), instance=i + 1) for i, hu in enumerate([bone, brain] * 5)]
    slices, plan = preprocess.series_slices(series, slab_mm=5.0)
    assert plan is not None and len(slices) == 2
    expected = preprocess.apply_window(np.full((8, 8), 500.0), *preprocess.MODEL_WINDOW)
    assert np.array_equal(slices[0], expected) and int(slices[0][0, 0]) == 255
    windowed_mean = np.mean([preprocess.dicom_to_slice(ds) for ds in series[:5]], axis=0)
    assert windowed_mean[0, 0] < 200, "the test must tell the two averages apart"


def test_series_slices_release_each_slice_decoded_pixels():
    """pydicom keeps decoded pixels on a dataset; a 1000-slice series held as datasets must not keep them all."""
    for spacing in (1.0, 5.0):  # slabs and slice by slice
        series = [dicom.read_dataset(dicom_bytes_source(ds)) for ds in _thin_series(6, spacing)]
        preprocess.series_slices(series, slab_mm=5.0)
        assert all(getattr(ds, "_pixel_array", None) is None for ds in series), spacing


def test_series_of_different_slice_sizes_is_read_slice_by_slice():
    series = [make_ct(np.zeros((8, 8 + i % 2)), position=(0, 0, i * 1.0), instance=i + 1) for i in range(10)]
    slices, plan = preprocess.series_slices(series, slab_mm=5.0)
    assert plan is None and len(slices) == 10


@pytest.fixture(scope="module")
def predictor():
    if not (paths.default_checkpoint_dir() / "model.pt").is_file():
        pytest.skip("no shipped model")
    from ml.predict import Predictor

    return Predictor(device="cpu")


def test_shipped_card_reads_thin_series_as_five_mm_slabs(predictor):
    card = json.loads((paths.default_checkpoint_dir() / "metadata.json").read_text())
    assert card["input"]["slab_mm"] == slabs.SLAB_MM == predictor.slab_mm


def test_thin_series_scores_as_its_slabs_and_each_slice_gets_its_slab(predictor):
    series = _thin_series(20, 1.0)
    result = predictor.predict_sources([dicom_bytes_source(ds) for ds in series], heatmaps=True)
    assert result.slabs["slabs"] == 4 and result.slabs["slices"] == 20 and result.slabs["slices_per_slab"] == 5
    assert len(result.slice_probabilities) == len(result.heatmaps) == len(result.images) == 20
    # The same answer as the four slabs scored as a 5 mm series of their own.
    thick, _ = preprocess.series_slices(series, slab_mm=5.0)
    reference = predictor.predict_slices(thick, heatmaps=True)
    assert result.probability == pytest.approx(reference.probability, abs=1e-6)
    for slab, group in enumerate(slabs.plan(dicom.positions(series)).groups):
        for index in group:
            assert result.slice_probabilities[index] == pytest.approx(reference.slice_probabilities[slab], abs=1e-6)
            assert np.allclose(result.heatmaps[index], reference.heatmaps[slab], atol=1e-5)
            assert np.array_equal(result.images[index], reference.images[slab])
    assert result.to_dict()["slabs"]["slabs"] == 4


def test_series_at_five_mm_is_scored_slice_by_slice_as_before(predictor):
    series = _thin_series(6, 5.0)
    result = predictor.predict_sources([dicom_bytes_source(ds) for ds in series], heatmaps=False)
    reference = predictor.predict_slices([preprocess.dicom_to_slice(ds) for ds in series], heatmaps=False)
    assert result.slabs == {} and "slabs" not in result.to_dict()
    assert result.slice_probabilities == pytest.approx(reference.slice_probabilities, abs=1e-6)


def test_predict_cli_reads_a_thin_series_folder_as_slabs(predictor, tmp_path, capsys):
    from ml.predict import main

    for i, ds in enumerate(_thin_series(10, 1.0)):
        (tmp_path / f"{i:02d}.dcm").write_bytes(dicom_bytes(ds))
    assert main([str(tmp_path)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["n_slices"] == 10 and len(line["slice_probabilities"]) == 10
    assert line["slabs"]["slabs"] == 2 and line["slabs"]["slices_per_slab"] == 5
    assert line["input_check"]["verdict"] == "ok"


def test_predict_cli_flags_thick_slices(predictor, tmp_path, capsys):
    from ml.predict import main

    for i, ds in enumerate(_thin_series(4, 10.0)):
        ds.SliceThickness = 10.0
        (tmp_path / f"{i:02d}.dcm").write_bytes(dicom_bytes(ds))
    assert main([str(tmp_path)]) == 0
    check = json.loads(capsys.readouterr().out)["input_check"]
    assert check["verdict"] == "warn" and check["message"].startswith("The slices are 10 mm thick")


def dicom_bytes_source(ds):
    import io

    return io.BytesIO(dicom_bytes(ds))


def test_predict_cli_refuses_a_coronal_reformat(predictor, tmp_path, capsys):
    from ml.predict import main

    for i in range(3):
        ds = make_ct(head_phantom_hu(32, seed=i), position=(0.0, i * 1.0, 0.0), orientation=(1, 0, 0, 0, 0, -1))
        (tmp_path / f"{i}.dcm").write_bytes(dicom_bytes(ds))
    assert main([str(tmp_path)]) == 1
    assert "not axial slices" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize("kind", ["scout", "coronal"])
def test_predict_cli_refuses_a_single_file_that_is_no_axial_slice(predictor, tmp_path, capsys, kind):
    from ml.predict import main

    axial = make_ct(head_phantom_hu(32, seed=1), position=(0.0, 0.0, 0.0))
    other = make_ct(head_phantom_hu(32, seed=2), position=(0.0, 0.0, 0.0), orientation=(1, 0, 0, 0, 0, -1))
    if kind == "scout":
        other = make_ct(head_phantom_hu(32, seed=2), position=(0.0, 0.0, 0.0))
        other.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    (tmp_path / "axial.dcm").write_bytes(dicom_bytes(axial))
    (tmp_path / "other.dcm").write_bytes(dicom_bytes(other))
    assert main([str(tmp_path / "other.dcm"), str(tmp_path / "axial.dcm")]) == 1
    refused, scored = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert refused["error"] == "not axial slices (a localizer or a reformat): other.dcm"
    assert scored["n_slices"] == 1 and scored["slices"] == ["axial.dcm"] and 0 <= scored["probability"] <= 1


def test_restored_hu_round_trips_the_window_and_averages_bone_with_brain_as_a_scanner():
    # The density benchmark's thick and interpolated slices of CT-ICH's windowed JPGs are made in HU restored from
    # the window: averaging the greys of bone (255) and brain would draw a blood-density grey a scanner never does.
    from ml.benchmark import densify_hu, restore_hu

    hu = np.array([[-1000.0, -20.0, 0.0, 35.0, 70.0, 100.0, 1200.0]])
    u8 = preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)
    assert np.array_equal(preprocess.apply_window(restore_hu(u8), *preprocess.MODEL_WINDOW), u8)
    bone, brain = np.full((2, 2), 255, np.uint8), np.full((2, 2), 117, np.uint8)  # 117: about 35 HU
    as_greys = (bone.astype(np.float32) + brain) / 2
    assert 50 <= -20 + as_greys[0, 0] * 120 / 255 <= 90  # blood density
    in_hu = preprocess.apply_window(slabs.mean_image([restore_hu(bone), restore_hu(brain)]), *preprocess.MODEL_WINDOW)
    assert (in_hu == 255).all()
    dense = densify_hu([brain, bone], 4)
    assert len(dense) == 5 and np.array_equal(dense[0], brain) and np.array_equal(dense[-1], bone)
    assert all((d == 255).all() for d in dense[1:])  # a quarter of bone in HU is already over the window


def test_predict_cli_refuses_dicom_that_is_not_ct_in_hounsfield_units(predictor, tmp_path, capsys):
    """As the upload does: an MR slice, and a CT slice whose pixels are a screen rendering (0-255, no air), are
    refused with the reason instead of being scored."""
    from ml.predict import main

    mr = make_ct(head_phantom_hu(32, seed=1))
    mr.Modality = "MR"
    rendered = make_ct(preprocess.apply_window(head_phantom_hu(32, seed=2), 40, 80).astype(np.float32), intercept=0.0)
    (tmp_path / "mr.dcm").write_bytes(dicom_bytes(mr))
    (tmp_path / "rendered.dcm").write_bytes(dicom_bytes(rendered))
    assert main([str(tmp_path / "mr.dcm"), str(tmp_path / "rendered.dcm")]) == 1
    errors = [json.loads(line)["error"] for line in capsys.readouterr().out.splitlines()]
    assert errors == [
        "mr.dcm: This DICOM file is MR (not CT). Only head CT can be analysed.",
        "rendered.dcm: This CT file's pixel values do not reach air (about -1000 HU; its lowest is 0), so they are not "
        "Hounsfield units: it looks like a screen rendering, or its rescale tags are missing. Export the original CT "
        "slices.",
    ]


def test_predict_cli_checks_every_slice_of_a_long_series_for_hounsfield_units(predictor, tmp_path, capsys):
    """The input check samples 64 slices of a long series; the Hounsfield check reads them all, as the upload does:
    one rendered slice that the sample passes over (index 29 of 70) still refuses the series."""
    from ml import inputcheck
    from ml.predict import main

    assert 29 not in inputcheck.slices_to_check(70)
    for i in range(70):
        hu = head_phantom_hu(16, seed=i)
        if i == 29:
            hu = preprocess.apply_window(hu, 40, 80).astype(np.float32)
        ds = make_ct(hu, position=(0.0, 0.0, 5.0 * i), instance=i + 1, intercept=0.0 if i == 29 else -1024.0)
        (tmp_path / f"{i:02d}.dcm").write_bytes(dicom_bytes(ds))
    assert main([str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["error"].startswith("29.dcm: This CT file's pixel values do not reach")
