"""The input check (ml.inputcheck): head CT in a brain window passes; pictures that are not CT are refused; a bone
window or an unusual picture is flagged. Phantoms and scikit-image's bundled pictures here; every real file in the
data folder in the tests marked with `data_root`."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image

from ml import data as mldata
from ml import inputcheck, preprocess
from tests.bad_uploads import picture_png
from tests.phantoms import head_phantom_hu, head_picture


def brain(size: int = 128, **kwargs) -> np.ndarray:
    return preprocess.apply_window(head_phantom_hu(size, **kwargs), *preprocess.MODEL_WINDOW)


def picture(name: str) -> tuple[np.ndarray, float]:
    """A scikit-image sample picture as the model would read it, and its colour fraction."""
    return preprocess.read_slice(io.BytesIO(picture_png(name)))


@pytest.mark.parametrize("size", [16, 32, 64, 128, 512])
@pytest.mark.parametrize("bleed", [False, True])
def test_a_head_in_a_brain_window_passes_at_any_size(size, bleed):
    check = inputcheck.check_slice(brain(size, bleed=bleed))
    assert check.failed == () and not check.unusual and not check.not_head_ct
    verdict = inputcheck.check_scan([check])
    assert verdict.verdict == "ok" and verdict.message == ""


def test_a_head_on_a_larger_canvas_with_a_grey_background_still_passes():
    canvas = np.full((400, 500), 40, np.uint8)  # a grey, not black, export background
    canvas[100:228, 150:278] = np.where(brain(128) > 0, brain(128), 40)
    assert inputcheck.check_slice(canvas).failed == ()


@pytest.mark.parametrize("tint", [(1.0, 1.0, 1.0), (0.82, 0.9, 1.0), (1.0, 0.93, 0.8)])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_greyscale_or_uniformly_tinted_colour_files_are_not_colour(tint, mode):
    """Some Head CT files are film scans with a blue cast: one tint of the grey level is not colour."""
    grey = brain(160).astype(np.float32)
    rgb = np.clip(np.stack([grey * t for t in tint], -1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buffer, format="PNG")
    u8, colour = preprocess.read_slice(buffer)
    assert colour < 0.01
    assert inputcheck.check_slice(u8, colour=colour).failed == ()


def _png(image: Image.Image) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer


def test_colour_hidden_in_transparent_pixels_does_not_count():
    """The model sees a picture composited on black: magenta air that is fully transparent is black air to it."""
    u8 = np.minimum(brain(128), 254)
    air = u8 == 0
    rgba = np.stack([u8, u8, u8, np.full_like(u8, 255)], -1)
    rgba[air] = (255, 0, 255, 0)
    # A palette picture whose transparent index is magenta, likewise.
    palette = Image.fromarray(np.where(air, 255, u8).astype(np.uint8), mode="P")
    palette.putpalette([v for i in range(255) for v in (i, i, i)] + [255, 0, 255])
    palette.info["transparency"] = 255
    for image in (Image.fromarray(rgba, mode="RGBA"), palette):
        grey, colour = preprocess.read_slice(_png(image))
        np.testing.assert_array_equal(grey, u8)
        assert colour == 0.0 and inputcheck.check_slice(grey, colour=colour).failed == ()
    rgba[air, 3] = 255  # the same magenta, now visible: a colour picture
    grey, colour = preprocess.read_slice(_png(Image.fromarray(rgba, mode="RGBA")))
    assert colour > 0.5 and "colour" in inputcheck.check_slice(grey, colour=colour).failed


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket"])
def test_colour_photographs_are_refused(name):
    u8, colour = picture(name)
    check = inputcheck.check_slice(u8, colour=colour)
    assert "colour" in check.failed and check.not_head_ct
    verdict = inputcheck.check_scan([check])
    assert verdict.verdict == "refuse"
    assert verdict.message.startswith("This image does not look like a head CT slice: ")
    assert inputcheck.REASONS["colour"] in verdict.message


@pytest.mark.parametrize("name", ["text", "brick", "grass", "moon", "page", "checkerboard"])
def test_greyscale_pictures_without_a_head_are_refused(name):
    u8, colour = picture(name)
    assert colour == 0.0
    verdict = inputcheck.check_scan([inputcheck.check_slice(u8)])
    assert verdict.verdict == "refuse", verdict


@pytest.mark.parametrize(
    "u8",
    [
        np.zeros((256, 256), np.uint8),
        np.full((256, 256), 128, np.uint8),
        np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8),
    ],
    ids=["black", "grey", "noise"],
)
def test_blank_frames_and_noise_are_refused(u8):
    check = inputcheck.check_slice(u8)
    assert "no_head" in check.failed and check.not_head_ct


def test_a_bone_window_is_flagged_not_refused():
    """Bone is grey, not white, in a bone window: the slice is a head CT, but not as the model was trained."""
    bone = preprocess.apply_window(head_phantom_hu(128), *preprocess.BONE_WINDOW)
    check = inputcheck.check_slice(bone)
    assert check.failed == ("no_skull",)
    verdict = inputcheck.check_scan([check])
    assert verdict.verdict == "warn"
    assert "unlike the brain-window head CT slices" in verdict.message and "skull rim" in verdict.message


def test_a_series_verdict_counts_its_slices():
    head, blank = inputcheck.check_slice(brain(64)), inputcheck.check_slice(np.zeros((64, 64), np.uint8))
    bone = inputcheck.check_slice(preprocess.apply_window(head_phantom_hu(64), *preprocess.BONE_WINDOW))
    # A few empty slices at the ends of a series are normal.
    assert inputcheck.check_scan([blank, *[head] * 10, blank]).verdict == "ok"
    # Many unusual slices: flagged, with the count.
    flagged = inputcheck.check_scan([bone] * 4 + [head] * 8)
    assert flagged.verdict == "warn" and flagged.message.startswith("4 of the 12 slices of this series look unlike")
    assert flagged.failed == {"no_skull": 4} and flagged.unusual == 4 and flagged.not_head_ct == 0
    # Mostly not head CT: refused; exactly half is not "most".
    refused = inputcheck.check_scan([blank] * 3 + [head] * 2)
    assert refused.verdict == "refuse" and refused.message.startswith(
        "3 of the 5 slices of this series do not look like"
    )
    assert inputcheck.check_scan([blank] * 2 + [head] * 2).verdict == "warn"
    with pytest.raises(ValueError):
        inputcheck.check_scan([])


def test_slices_thicker_than_the_model_learnt_are_flagged_not_refused():
    head = inputcheck.check_slice(brain(64))
    bone = inputcheck.check_slice(preprocess.apply_window(head_phantom_hu(64), *preprocess.BONE_WINDOW))
    blank = inputcheck.check_slice(np.zeros((64, 64), np.uint8))
    for thickness in (None, 0.625, 5.0, inputcheck.THICK_SLICE_MM):
        assert inputcheck.check_scan([head] * 4, slice_thicknesses=[thickness] * 4).verdict == "ok"
    thick = inputcheck.check_scan([head] * 4, slice_thicknesses=[10.0] * 4)
    assert thick.verdict == "warn" and thick.thick_slices == 4 and thick.max_slice_thickness_mm == 10.0
    assert thick.message.startswith("The slices are 10 mm thick; the model learnt from 5 mm slices")
    # A third of the slices is enough (a posterior fossa in 4 mm under a 7-10 mm cerebrum); fewer is not.
    some = inputcheck.check_scan([head] * 6, slice_thicknesses=[4.0] * 4 + [7.0, 10.0])
    assert some.verdict == "warn" and some.message.startswith("2 of the 6 slices are 7-10 mm thick")
    few = inputcheck.check_scan([head] * 7, slice_thicknesses=[4.0] * 5 + [7.0, None])
    assert few.verdict == "ok" and few.thick_slices == 1 and few.max_slice_thickness_mm == 7.0
    one_of_three = inputcheck.check_scan([head] * 3, slice_thicknesses=[4.0, 4.0, 7.0])
    assert one_of_three.message.startswith("1 of the 3 slices is 7 mm thick")
    single = inputcheck.check_scan([head], slice_thicknesses=[10.0])
    assert single.message.startswith("The slice is 10 mm thick")
    # Added to another warning, never softening a refusal.
    both = inputcheck.check_scan([bone] * 2 + [head] * 2, slice_thicknesses=[7.5] * 4)
    assert both.message.startswith("2 of the 4 slices") and both.message.endswith(
        "The slices are 7.5 mm thick; the model learnt from 5 mm slices and misses more bleeds on thicker ones, "
        "where a small bleed is averaged with the brain around it. Read a negative result with caution."
    )
    assert inputcheck.check_scan([blank] * 3 + [head], slice_thicknesses=[10.0] * 4).verdict == "refuse"


def test_a_long_series_is_judged_on_evenly_spaced_slices():
    assert inputcheck.slices_to_check(5) == [0, 1, 2, 3, 4]
    picked = inputcheck.slices_to_check(1000)
    assert len(picked) == inputcheck.MAX_CHECKED_SLICES and picked[0] == 0 and picked[-1] == 999
    gaps = np.diff(picked)
    assert gaps.min() >= 15 and gaps.max() <= 17
    head, bone = (
        inputcheck.check_slice(brain(64)),
        inputcheck.check_slice(preprocess.apply_window(head_phantom_hu(64), *preprocess.BONE_WINDOW)),
    )
    verdict = inputcheck.check_scan([bone] * 30 + [head] * 34, total=1000)
    assert verdict.verdict == "warn" and verdict.slices == 64 and verdict.total == 1000
    assert verdict.message.startswith("30 of the 64 slices checked in this 1000-slice series look unlike")
    assert inputcheck.check_scan([head], total=1).total == 1


def test_the_verdict_is_plain_json():
    d = inputcheck.check_scan([inputcheck.check_slice(np.zeros((32, 32), np.uint8))]).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["version"] == inputcheck.VERSION and d["verdict"] == "refuse" and d["slices"] == 1


def test_predict_cli_reports_the_verdict_beside_the_probability(tmp_path):
    from tests.ml.test_train_smoke import _tiny_checkpoint

    tiny_checkpoint = _tiny_checkpoint(tmp_path / "ckpt")
    good, photo = tmp_path / "head.png", tmp_path / "cat.png"
    Image.fromarray(head_picture(96)).save(good)
    Image.fromarray(skimage.data.chelsea()).save(photo)
    out = subprocess.run(
        [sys.executable, "-m", "ml.predict", "--checkpoint", str(tiny_checkpoint), str(good), str(photo)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["input_check"]["verdict"] for line in lines] == ["ok", "refuse"]
    assert "colour" in lines[1]["input_check"]["failed"]
    assert all(0.0 <= line["probability"] <= 1.0 for line in lines)


# --- every real file in the data folder ----------------------------------------------------------------------------


def test_every_head_ct_image_passes(data_root):
    scans = mldata.read_head_ct(mldata.dataset_roots("head_ct", data_root)["head_ct"])
    assert len(scans) == 200
    failed = {}
    for scan in scans:
        u8, colour = preprocess.read_slice(scan.slice_paths[0])
        check = inputcheck.check_slice(u8, colour=colour)
        if check.failed:
            failed[scan.scan_id] = check
    assert failed == {}


def test_every_ct_ich_series_passes_and_no_slice_alone_is_refused(data_root):
    scans = mldata.read_ct_ich(mldata.dataset_roots("ct_ich", data_root)["ct_ich"])
    assert len(scans) >= 60
    unusual = 0
    for scan in scans:
        checks = [inputcheck.check_slice(preprocess.load_slice(p)) for p in scan.slice_paths]
        assert inputcheck.check_scan(checks).verdict == "ok", scan.scan_id
        assert not any(c.not_head_ct for c in checks), scan.scan_id
        unusual += sum(c.unusual for c in checks)
    # Unusual single slices exist (the top of the skull, the skull base) but are rare.
    assert unusual < 0.02 * sum(len(s.slice_paths) for s in scans)


def test_no_dicom_file_in_the_data_folder_is_refused(dicom_root):
    files = sorted(p for p in dicom_root.rglob("*.dcm") if p.parent.name != "masks")
    assert len(files) >= 50
    for path in files:
        check = inputcheck.check_slice(preprocess.load_slice(path))
        assert not check.not_head_ct, (path, check)
    slices, _ = preprocess.load_scan(dicom_root / "ge_head_series")
    assert inputcheck.check_scan([inputcheck.check_slice(s) for s in slices]).verdict == "ok"


def test_ct_ich_bone_window_series_are_flagged_and_masks_refused(data_root):
    root = mldata.dataset_roots("ct_ich", data_root)["ct_ich"]
    for scan in mldata.read_ct_ich(root)[:3]:
        bone = [p.parent.parent / "bone" / p.name for p in scan.slice_paths]
        verdict = inputcheck.check_scan([inputcheck.check_slice(preprocess.load_slice(p)) for p in bone])
        assert verdict.verdict == "warn" and "no_skull" in verdict.failed, scan.scan_id
    masks = sorted((root / "Patients_CT").glob("*/brain/*_HGE_Seg.jpg"))[:20]
    assert len(masks) == 20
    refused = [inputcheck.check_scan([inputcheck.check_slice(preprocess.load_slice(p))]).verdict for p in masks]
    assert refused.count("refuse") >= 18, refused


def test_exports_of_a_head_in_other_windows_and_forms_get_the_expected_verdicts():
    from ml.benchmark import _inputcheck_exports

    verdicts = {
        name: next(v for v, n in counts.items() if n)
        for name, counts in _inputcheck_exports([head_phantom_hu(256, bleed=True)]).items()
    }
    assert verdicts.pop("inverted (white air)") == "refuse"
    assert verdicts.pop("window bone 600/2800") == "warn" and verdicts.pop("window bone 500/2000") == "warn"
    verdicts.pop("cropped to the middle half (no air)")  # a flat phantom has no anatomy inside: not a fair test
    # Brain windows, turned, resized, compressed, noisy or annotated: still a head CT.
    assert set(verdicts.values()) == {"ok"}, verdicts


def test_held_out_pictures_photos_logos_and_charts_are_refused_and_a_head_mri_is_not_passed():
    """matplotlib's sample pictures played no part in setting the thresholds."""
    from ml.benchmark import _held_out_pictures

    verdicts = {
        name: inputcheck.check_scan([inputcheck.check_slice(u8, colour=colour)])
        for name, (u8, colour) in _held_out_pictures().items()
    }
    for name in ("photo (grace_hopper.jpg)", "product photo (Minduka_Present_Blue_Pack.png)", "logo (logo2.png)"):
        assert verdicts[name].verdict == "refuse" and "colour" in verdicts[name].failed, name
    assert verdicts["line chart (matplotlib)"].verdict == "refuse"
    # A head, but an MRI: no white skull rim, so it is flagged, not passed.
    mri = verdicts["head MRI slice (s1045.ima)"]
    assert mri.verdict == "warn" and mri.failed == {"no_skull": 1}
