"""Dataset readers on the real layouts, and patient-grouped stratified splits."""

from __future__ import annotations

import pytest

from ml import data, paths


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
