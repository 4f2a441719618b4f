"""Dataset readers on the real layouts, and patient-grouped stratified splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml import data, evaluate, paths, preprocess
from tests.ml.conftest import phantom_slice


def test_missing_data_dir_raises_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HEMO_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(paths.DataNotFound, match="HEMO_DATA_DIR"):
        paths.data_dir()
    assert paths.data_dir(required=False) == (tmp_path / "nowhere").resolve()


def test_head_ct_reader(data_root):
    scans = data.read_head_ct(data_root / "head_ct")
    assert len(scans) == 200
    assert sum(s.label for s in scans) == 100
    assert all(len(s.slice_paths) == 1 and s.slice_labels == [s.label] for s in scans)
    assert {s.scan_id for s in scans if s.label} == {f"{i:03d}" for i in range(100)}


def test_ct_ich_reader(data_root):
    scans = data.read_ct_ich(data_root / "ct_ich")
    assert len(scans) == 66
    assert sum(s.label for s in scans) == 29
    assert sum(len(s.slice_paths) for s in scans) == 2021
    assert sum(sum(s.slice_labels) for s in scans) == 249
    for s in scans:
        assert not any("_HGE_Seg" in p.name for p in s.slice_paths), "masks are not slices"
        numbers = [int(p.stem) for p in s.slice_paths]
        assert numbers == sorted(numbers)
        assert s.label == int(any(s.slice_labels))
        # Every bleeding slice has its hemorrhage mask, and no other slice has one.
        assert [m is not None for m in s.mask_paths] == [bool(v) for v in s.slice_labels]


@pytest.mark.parametrize("seed", [0, 1])
def test_split_is_disjoint_stratified_and_deterministic(data_root, seed):
    scans = data.read_ct_ich(data_root / "ct_ich")
    split = data.split_ids(scans, seed=seed)
    assert split == data.split_ids(scans, seed=seed)
    ids = split["train"] + split["val"] + split["test"]
    assert len(ids) == len(set(ids)) == len(scans)
    labels = {s.scan_id: s.label for s in scans}
    for part in ("val", "test"):
        positives = sum(labels[i] for i in split[part])
        assert 0 < positives < len(split[part]), f"{part} must hold both classes"
    assert abs(len(split["train"]) / len(scans) - 0.70) < 0.05
    folds = data.kfold_ids(scans, k=3, seed=seed)
    tested = [i for _, te in folds for i in te]
    assert sorted(tested) == sorted(labels), "every patient is tested exactly once in k-fold CV"


def _phantom_scans(n: int, duplicates: dict[int, int]) -> tuple[list[data.Scan], dict[str, np.ndarray]]:
    """n single-image scans of distinct coarse textures (first half labelled positive); duplicates maps an index to
    the index it copies, as a brighter, lower-contrast re-export would."""
    scans, arrays = [], {}
    for i in range(n):
        label = int(i < n // 2)
        source = duplicates.get(i, i)
        img = np.kron(np.random.default_rng(source).random((12, 12)), np.ones((8, 8))) * 200
        if i in duplicates:
            img = np.clip(img * 0.9 + 12, 0, 255)
        scan = data.Scan("head_ct", f"{i:03d}", label, [Path(f"{i:03d}.png")], [label])
        scans.append(scan)
        arrays[scan.key] = img.astype(np.uint8)[None]
    return scans, arrays


def test_near_duplicates_are_grouped_and_never_split_apart():
    scans, arrays = _phantom_scans(20, {11: 3, 12: 3, 17: 14})
    groups = data.group_near_duplicates(scans, arrays)
    assert groups == [["003", "011", "012"], ["014", "017"]]
    by_id = {s.scan_id: s for s in scans}
    assert by_id["011"].group_id == by_id["003"].group_id == "003" and by_id["005"].group_id == "005"
    group_of = {s.scan_id: s.group_id for s in scans}
    for seed in range(6):
        split = data.split_ids(scans, seed=seed)
        parts = [{group_of[i] for i in split[p]} for p in ("train", "val", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), split
        assert sorted(split["train"] + split["val"] + split["test"]) == sorted(group_of)
        for train, test in data.kfold_ids(scans, k=4, seed=seed):
            assert not {group_of[i] for i in train} & {group_of[i] for i in test}
        train, val = data.inner_split(scans, seed=seed)
        assert not {group_of[i] for i in train} & {group_of[i] for i in val} and val


def test_without_duplicates_the_grouped_split_equals_the_per_scan_split():
    """Distinct images stay one group each, and a split then deals scans exactly as a per-scan split would."""
    scans, arrays = _phantom_scans(20, {})
    assert data.group_near_duplicates(scans, arrays) == []
    split = data.split_ids(scans, seed=4)
    rng = np.random.default_rng(4)
    expected = {"train": [], "val": [], "test": []}
    for label in (0, 1):
        ids = sorted(s.scan_id for s in scans if s.label == label)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        expected["train"] += ids[:6]  # 10 per class: round(1.5) = 2 each to val and test
        expected["val"] += ids[6:8]
        expected["test"] += ids[8:]
    assert split == {k: sorted(v) for k, v in expected.items()}


def test_head_ct_duplicates_found_and_the_shipped_split_keeps_them_together(data_root):
    """Head CT holds the same slice twice under different ids (011 and 061 are one image; 188 and 189 too): the
    grouping must find them, and the shipped model's card must never put one copy in training and one in test."""
    scans = data.read_head_ct(data_root / "head_ct")
    groups = data.group_near_duplicates(scans, data.load_slices(scans, size=128))
    assert ["011", "061"] in groups and ["188", "189"] in groups
    assert all(len({int(i) < 100 for i in g}) == 1 for g in groups), "a duplicate group never mixes labels"
    card = json.loads((paths.default_checkpoint_dir() / "metadata.json").read_text())
    group_of = {s.scan_id: s.group_id for s in scans}
    split = card["splits"]["head_ct"]
    parts = [{group_of[i] for i in split[p]} for p in ("train", "val", "test")]
    assert not (parts[0] & parts[2] or parts[1] & parts[2] or parts[0] & parts[1])


def _head_phantom_pngs(folder: Path, n: int) -> list[data.Scan]:
    from PIL import Image

    scans = []
    for i in range(n):
        img = np.zeros((96, 96), np.uint8)
        yy, xx = np.mgrid[:96, :96]
        img[(yy - 48) ** 2 / 40**2 + (xx - 48) ** 2 / 32**2 <= 1] = 90 + 20 * i
        Image.fromarray(img).save(folder / f"{i:03d}.png")
        scans.append(data.Scan("head_ct", f"{i:03d}", i % 2, [folder / f"{i:03d}.png"], [i % 2]))
    return scans


def test_slice_cache_is_keyed_by_the_preprocessing_code(tmp_path, monkeypatch):
    """Cached inputs are reused only by the preprocessing code that made them: arrays cached under another
    fingerprint (an older ml/preprocess.py) are never read back."""
    monkeypatch.setenv("HEMO_CACHE_DIR", str(tmp_path / "cache"))
    scans = _head_phantom_pngs(tmp_path, 3)
    assert data.preprocess_fingerprint(b"crop = 1") != data.preprocess_fingerprint(b"crop = 2")
    file = data.cache_file(scans, 64)
    assert data.preprocess_fingerprint() in file.name
    fresh = data.load_slices(scans, size=64)
    assert file.is_file() and set(fresh) == {s.key for s in scans}
    # A stale cache of the same scans under an old fingerprint holds wrong arrays: it must be ignored.
    (tmp_path / "cache").mkdir(exist_ok=True)
    stale = file.with_name(file.name.replace(data.preprocess_fingerprint(), "0000000000"))
    np.savez(stale, **{s.scan_id: np.full((1, 64, 64), 7, np.uint8) for s in scans})
    file.unlink()
    again = data.load_slices(scans, size=64)
    assert all(np.array_equal(again[k], fresh[k]) for k in fresh)
    assert not any((again[k] == 7).all() for k in again)
    # And the current cache is read back as written.
    np.savez(file, **{s.scan_id: np.full((1, 64, 64), 9, np.uint8) for s in scans})
    assert all((v == 9).all() for v in data.load_slices(scans, size=64).values())


def test_masks_land_on_the_bleed_of_the_model_input(tmp_path):
    """A mask is cropped and resized with its slice's head box: on a large, off-centre canvas with a letter block it
    still covers the bleed of the model input, which is where the bleeding and the clean phantom differ."""
    from PIL import ImageDraw

    from tests.ml.conftest import head_phantom_hu, phantom_bleed_mask

    def on_canvas(img: np.ndarray) -> np.ndarray:
        canvas = np.zeros((520, 700), np.uint8)
        canvas[150:350, 300:500] = img
        pic = Image.fromarray(canvas)
        ImageDraw.Draw(pic).rectangle([10, 10, 60, 70], fill=255)
        return np.asarray(pic)

    window = preprocess.MODEL_WINDOW
    bleeding = on_canvas(preprocess.apply_window(head_phantom_hu(200, bleed=True), *window))
    clean = on_canvas(preprocess.apply_window(head_phantom_hu(200), *window))
    mask = np.zeros_like(bleeding)
    mask[150:350, 300:500] = phantom_bleed_mask(200)
    on_input = data.mask_on_input(bleeding, mask, size=128)
    assert on_input.shape == (128, 128) and on_input.dtype == np.uint8
    diff = np.abs(
        preprocess.crop_resize(bleeding, size=128).astype(int) - preprocess.crop_resize(clean, size=128).astype(int)
    )
    bleed = diff > 15
    covered = on_input > 127
    overlap = (bleed & covered).sum() / (bleed | covered).sum()
    assert overlap > 0.8, f"the mask is off the bleed (IoU {overlap:.2f})"
    # Off by the canvas offset it would miss: the check can fail.
    shifted = np.zeros_like(mask)
    shifted[150:350, 330:530] = phantom_bleed_mask(200)
    moved = data.mask_on_input(bleeding, shifted, size=128) > 127
    assert (bleed & moved).sum() / (bleed | moved).sum() < 0.5
    with pytest.raises(ValueError, match="mask shape"):
        data.mask_on_input(bleeding, mask[:100], size=128)


def test_masks_are_loaded_for_bleeding_slices_only_and_cached(synthetic_root):
    scans = data.read_ct_ich(synthetic_root / "ct_ich")
    masks = data.load_masks(scans, size=48)
    assert set(masks) == {s.key for s in scans}
    for s in scans:
        m = masks[s.key]
        assert m.shape == (len(s.slice_paths), 48, 48)
        assert [bool((m[i] > 127).any()) for i in range(len(m))] == [bool(v) for v in s.slice_labels]
    file = data.cache_file(scans, 48, "masks")
    assert file.is_file() and file != data.cache_file(scans, 48)
    np.savez(file, **{s.scan_id: np.full((len(s.slice_paths), 48, 48), 9, np.uint8) for s in scans})
    assert all((v == 9).all() for v in data.load_masks(scans, size=48).values()), "the cache is read back"
    assert data.load_masks(data.read_head_ct(synthetic_root / "head_ct"), size=48) == {}, "Head CT has no masks"


def test_head_ct_reader_takes_the_kaggle_download_as_unpacked(tmp_path, capsys, monkeypatch):
    """Kaggle's archive puts labels.csv beside head_ct/head_ct/*.png; an external set may write ids unpadded ("7") and
    lack some images. Every image that is there is read (under its padded id), the missing ones are named on stderr,
    and a label that is not 0 or 1 is refused with its line."""
    monkeypatch.setenv("HEMO_CACHE_DIR", str(tmp_path / "cache"))
    images = tmp_path / "head_ct" / "head_ct"
    images.mkdir(parents=True)
    for i in (0, 7, 12, 130):
        name = f"{i:03d}.png" if i < 100 else f"{i}.JPG"
        Image.fromarray(phantom_slice(i < 10, i)).save(images / name)
    # A stray picture beside labels.csv does not hide the images below; a trailing comma adds an empty field.
    Image.fromarray(phantom_slice(False, 99)).save(tmp_path / "preview.png")
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,1\n7,1,\n12,0\n130,0\n55,1\n")
    scans = data.read_head_ct(tmp_path)
    assert [(s.scan_id, s.label, s.slice_paths[0].name) for s in scans] == [
        ("000", 1, "000.png"),
        ("007", 1, "007.png"),
        ("012", 0, "012.png"),
        ("130", 0, "130.JPG"),
    ]
    err = capsys.readouterr().err
    assert "1 of the ids" in err and ": 55" in err
    # ml.evaluate --data-dir pointed at the unpacked download scores the four images with the shipped model.
    assert data.dataset_roots("head_ct", tmp_path) == {"head_ct": tmp_path}
    assert evaluate.main(["--data-dir", str(tmp_path), "--layout", "head_ct", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n_scans"], report["scan"]["confusion"]["tp"] + report["scan"]["confusion"]["fn"]) == (4, 2)
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,1\n7,yes\n")
    with pytest.raises(ValueError, match="line 3.*0 or 1.*'yes'"):
        data.read_head_ct(tmp_path)
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n900,1\n901,0\n")
    with pytest.raises(paths.DataNotFound, match="lists 2 images, none of which"):
        data.read_head_ct(tmp_path)


def test_ct_ich_reader_takes_unpadded_patient_folders(synthetic_root):
    ich = synthetic_root / "ct_ich" / "Patients_CT"
    (ich / "003").rename(ich / "3")
    scans = data.read_ct_ich(synthetic_root / "ct_ich")
    assert [s.scan_id for s in scans] == [f"{p:03d}" for p in range(1, 8)]
    assert scans[2].slice_paths[0].parent == ich / "3" / "brain" and scans[2].label == 1


def test_slice_cache_never_serves_a_file_replaced_in_place(tmp_path, monkeypatch):
    """An external test set rewritten under the same file names (same count, same first path) must be read again."""
    monkeypatch.setenv("HEMO_CACHE_DIR", str(tmp_path / "cache"))
    scans = _head_phantom_pngs(tmp_path, 2)
    first = data.load_slices(scans, size=32)
    replaced = scans[1].slice_paths[0]
    Image.fromarray(np.zeros((96, 96), np.uint8) + 30).save(replaced)
    again = data.load_slices(scans, size=32)
    assert np.array_equal(again[scans[0].key], first[scans[0].key])
    assert not np.array_equal(again[scans[1].key], first[scans[1].key])
    assert np.array_equal(again[scans[1].key], data.load_slices(scans, size=32, cache=False)[scans[1].key])


def test_mask_cache_never_serves_a_mask_replaced_in_place(synthetic_root):
    scans = data.read_ct_ich(synthetic_root / "ct_ich")
    before = data.cache_file(scans, 32, "masks")
    mask = next(m for s in scans for m in (s.mask_paths or []) if m is not None)
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(mask)
    assert data.cache_file(scans, 32, "masks") != before
    assert data.cache_file(scans, 32) == data.cache_file(scans, 32), "slices keyed by their own files"
