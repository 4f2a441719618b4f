"""Readers for the dataset layouts, the preprocessed-slice cache and patient-grouped splits.

Layouts (see ../shared/data/README.md):
- head_ct: <id>.png + labels.csv ("id, hemorrhage", note the space); one slice per person.
- ct_ich: Patients_CT/<NNN>/brain/<slice>.jpg + hemorrhage_diagnosis.csv (UTF-8 BOM); a patient is positive when any
  slice has No_Hemorrhage = 0; <slice>_HGE_Seg.jpg files are masks, not slices.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ml import paths
from ml.preprocess import crop_resize, load_slice

LAYOUTS = ("head_ct", "ct_ich")


@dataclass
class Scan:
    """One scan (a series, or a single image as a series of one) with its labels."""

    dataset: str
    scan_id: str
    label: int
    slice_paths: list[Path]
    slice_labels: list[int] | None = None  # per-slice labels where the dataset has them
    slice_names: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.scan_id}"


def read_head_ct(root: str | Path) -> list[Scan]:
    """Kaggle 'Head CT - hemorrhage': one slice per person, labels.csv with columns 'id, hemorrhage'."""
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise paths.DataNotFound(f"{labels} not found. {paths.HOW_TO_GET_DATA}")
    scans = []
    with labels.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh, skipinitialspace=True):
            row = {k.strip(): v.strip() for k, v in row.items()}
            scan_id = row["id"].zfill(3)
            candidates = [root / f"{scan_id}{ext}" for ext in (".png", ".jpg", ".jpeg")]
            image = next((p for p in candidates if p.is_file()), None)
            if image is None:
                continue
            label = int(row["hemorrhage"])
            scans.append(Scan("head_ct", scan_id, label, [image], [label], [image.name]))
    return scans


def read_ct_ich(root: str | Path) -> list[Scan]:
    """PhysioNet CT-ICH: per-patient brain-window JPG series ordered by SliceNumber, per-slice labels."""
    root = Path(root)
    table = root / "hemorrhage_diagnosis.csv"
    if not table.is_file():
        raise paths.DataNotFound(f"{table} not found. {paths.HOW_TO_GET_DATA}")
    per_patient: dict[int, list[tuple[int, int]]] = {}
    with table.open(newline="", encoding="utf-8-sig") as fh:  # the file starts with a BOM
        for row in csv.DictReader(fh):
            patient, number = int(row["PatientNumber"]), int(row["SliceNumber"])
            positive = int(float(row["No_Hemorrhage"])) == 0
            per_patient.setdefault(patient, []).append((number, int(positive)))
    scans = []
    for patient, rows in sorted(per_patient.items()):
        folder = root / "Patients_CT" / f"{patient:03d}" / "brain"
        rows = sorted(r for r in rows if (folder / f"{r[0]}.jpg").is_file())
        if not rows:
            continue
        slice_paths = [folder / f"{n}.jpg" for n, _ in rows]
        slice_labels = [lab for _, lab in rows]
        scans.append(
            Scan(
                "ct_ich",
                f"{patient:03d}",
                int(any(slice_labels)),
                slice_paths,
                slice_labels,
                [p.name for p in slice_paths],
            )
        )
    return scans


def read_layout(layout: str, root: str | Path) -> list[Scan]:
    if layout == "head_ct":
        return read_head_ct(root)
    if layout == "ct_ich":
        return read_ct_ich(root)
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")


def dataset_roots(dataset: str, data_dir: str | Path) -> dict[str, Path]:
    """Map --dataset head_ct|ct_ich|both + --data-dir to the dataset folders. data_dir may be the data root
    (holding head_ct/ and ct_ich/) or, for a single dataset, that dataset's folder itself."""
    data_dir = Path(data_dir)
    names = list(LAYOUTS) if dataset == "both" else [dataset]
    roots = {}
    for name in names:
        if (data_dir / name).is_dir():
            roots[name] = data_dir / name
        elif len(names) == 1 and data_dir.is_dir():
            roots[name] = data_dir
        else:
            raise paths.DataNotFound(f"{data_dir / name} not found. {paths.HOW_TO_GET_DATA}")
    return roots


def load_slices(scans: Sequence[Scan], *, size: int, cache: bool = True, transform=None) -> dict[str, np.ndarray]:
    """Preprocessed uint8 slices (T x size x size) per scan key, cached under ml.paths.cache_dir().

    JPEG decoding of 650x650 slices dominates epoch time, so training caches the cropped, resized uint8 arrays.
    `transform` (uint8 slice -> uint8 slice) runs before cropping; with it nothing is cached.
    """
    out: dict[str, np.ndarray] = {}
    by_dataset: dict[str, list[Scan]] = {}
    for scan in scans:
        by_dataset.setdefault(scan.dataset, []).append(scan)
    for name, group in by_dataset.items():
        digest = hashlib.sha1("|".join(f"{s.key}:{len(s.slice_paths)}:{s.slice_paths[0]}" for s in group).encode())
        file = paths.cache_dir() / f"{name}_{size}_v3_{digest.hexdigest()[:12]}.npz"
        if cache and transform is None and file.is_file():
            with np.load(file) as stored:
                out.update({f"{name}/{k}": stored[k] for k in stored.files})
            continue
        arrays = {}
        for scan in group:
            slices = []
            for p in scan.slice_paths:
                raw = load_slice(p)
                if transform is not None:
                    raw = transform(raw)
                slices.append(crop_resize(raw, size=size))
            arrays[scan.scan_id] = np.stack(slices)
        if cache and transform is None:
            tmp = file.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(file)
        out.update({f"{name}/{k}": v for k, v in arrays.items()})
    return out


def split_ids(scans: Sequence[Scan], *, seed: int, fractions=(0.70, 0.15, 0.15)) -> dict[str, list[str]]:
    """Stratified train/val/test split of scan ids. A scan is one patient in both datasets (Head CT holds one slice
    per person; CT-ICH one series per patient), so this is a patient-grouped split. Each class is shuffled with the
    seed and cut by the fractions (at least one scan of each class in val and test when the class has 3+)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label in sorted({s.label for s in scans}):
        ids = sorted(s.scan_id for s in scans if s.label == label)
        ids = [ids[i] for i in rng.permutation(len(ids))]
        n = len(ids)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        n_train = n - n_val - n_test
        parts["train"] += ids[:n_train]
        parts["val"] += ids[n_train : n_train + n_val]
        parts["test"] += ids[n_train + n_val :]
    return {k: sorted(v) for k, v in parts.items()}


def kfold_ids(scans: Sequence[Scan], *, k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Stratified k-fold over scans (= patients): list of (train ids, test ids)."""
    ids = np.array([s.scan_id for s in scans])
    labels = np.array([s.label for s in scans])
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(ids, labels)
    return [(sorted(ids[a].tolist()), sorted(ids[b].tolist())) for a, b in folds]
