"""Readers for the dataset layouts, the preprocessed-slice cache and patient-grouped splits.

Layouts (see ../shared/data/README.md):
- head_ct: <id>.png + labels.csv ("id, hemorrhage", note the space). Its source says one slice per person, but some
  images are the same slice twice or neighbouring slices of one scan (correlation of the model inputs >= 0.95):
  `group_near_duplicates` puts those into one group so that splits never separate them.
- ct_ich: Patients_CT/<NNN>/brain/<slice>.jpg + hemorrhage_diagnosis.csv (UTF-8 BOM); a patient is positive when any
  slice has No_Hemorrhage = 0; <slice>_HGE_Seg.jpg files are the hemorrhage masks of the bleeding slices (white on
  black), not slices: `load_masks` brings them onto the model input for mask-supervised training.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ml import paths, preprocess
from ml.preprocess import crop_resize, load_slice

LAYOUTS = ("head_ct", "ct_ich")
LABEL_FILES = {"head_ct": "labels.csv", "ct_ich": "hemorrhage_diagnosis.csv"}


@dataclass
class Scan:
    """One scan (a series, or a single image as a series of one) with its labels."""

    dataset: str
    scan_id: str
    label: int
    slice_paths: list[Path]
    slice_labels: list[int] | None = None  # per-slice labels where the dataset has them
    slice_names: list[str] = field(default_factory=list)
    group: str = ""  # scans of one patient share a group; empty: the scan is its own group
    mask_paths: list[Path | None] | None = None  # per slice: its hemorrhage mask file, None for a slice without

    @property
    def group_id(self) -> str:
        return self.group or self.scan_id

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.scan_id}"


HEAD_CT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")


def _image_names(raw_id: str) -> tuple[str, list[str]]:
    """A labelled id's scan id (zero-padded to 3 digits when numeric) and the file names its image may have."""
    scan_id = raw_id.zfill(3) if raw_id.isdigit() else raw_id
    names = dict.fromkeys(f"{name}{ext}".lower() for name in (raw_id, scan_id) for ext in HEAD_CT_EXTENSIONS)
    return scan_id, list(names)


def read_head_ct(root: str | Path) -> list[Scan]:
    """Kaggle 'Head CT - hemorrhage': one slice per image, labels.csv with columns 'id, hemorrhage'.

    The images lie beside labels.csv, or (as Kaggle's download unpacks) in head_ct/ or head_ct/head_ct/ below it:
    the folder holding most of the labelled images is used. An id names its image with or without the zero padding
    to three digits ("7" or "007": 007.png), in any of HEAD_CT_EXTENSIONS (any case). A labelled id without an image
    is left out and named in a warning on stderr; a labels.csv that matches no image at all, or a label other than 0
    or 1, is an error that says so."""
    root = Path(root)
    labels = root / "labels.csv"
    if not labels.is_file():
        raise paths.DataNotFound(f"{labels} not found. {paths.HOW_TO_GET_DATA}")
    rows = []
    with labels.open(newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.DictReader(fh, skipinitialspace=True), start=2):
            # A trailing comma gives an extra field under the key None (a list): it holds nothing we read.
            row = {k.strip(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
            if "id" not in row or "hemorrhage" not in row:
                raise ValueError(f"{labels} needs the columns 'id, hemorrhage'; it has {sorted(row)}")
            if row["id"]:
                rows.append((row["id"], _binary_label(row["hemorrhage"], f"{labels}, line {line}")))
    named = [(raw_id, label, *_image_names(raw_id)) for raw_id, label in rows]
    folders = [f for f in (root, root / "head_ct", root / "head_ct" / "head_ct") if f.is_dir()]
    listings = [{p.name.lower(): p for p in f.iterdir() if p.is_file()} for f in folders]
    found = [sum(any(n in files for n in names) for *_, names in named) for files in listings]
    best = int(np.argmax(found))
    folder, files = folders[best], listings[best]
    scans, missing = [], []
    for raw_id, label, scan_id, names in named:
        image = next((files[n] for n in names if n in files), None)
        if image is None:
            missing.append(raw_id)
            continue
        scans.append(Scan("head_ct", scan_id, label, [image], [label], [image.name]))
    if not scans:
        raise paths.DataNotFound(
            f"{labels} lists {len(missing)} images, none of which is in {root} or its head_ct/ or head_ct/head_ct/ "
            f"(looked for <id>{'|'.join(HEAD_CT_EXTENSIONS)}, id as written or zero-padded to 3 digits)."
        )
    if missing:
        print(
            f"warning: {len(missing)} of the ids in {labels} have no image in {folder} and are left out: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
            file=sys.stderr,
        )
    return scans


def _binary_label(value: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = None
    if number not in (0.0, 1.0):
        raise ValueError(f"{where}: the label must be 0 or 1, not {value!r}")
    return int(number)


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
    scans, missing = [], 0
    for patient, listed in sorted(per_patient.items()):
        folder = next(
            (
                f
                for f in (root / "Patients_CT" / name / "brain" for name in (f"{patient:03d}", str(patient)))
                if f.is_dir()
            ),
            root / "Patients_CT" / f"{patient:03d}" / "brain",
        )
        rows = sorted(r for r in listed if (folder / f"{r[0]}.jpg").is_file())
        missing += len(listed) - len(rows)
        if not rows:
            continue
        slice_paths = [folder / f"{n}.jpg" for n, _ in rows]
        slice_labels = [lab for _, lab in rows]
        masks = [folder / f"{n}_HGE_Seg.jpg" for n, _ in rows]
        scans.append(
            Scan(
                "ct_ich",
                f"{patient:03d}",
                int(any(slice_labels)),
                slice_paths,
                slice_labels,
                [p.name for p in slice_paths],
                mask_paths=[m if m.is_file() else None for m in masks],
            )
        )
    if not scans:
        raise paths.DataNotFound(
            f"{table} lists {missing} slices, none of which is in {root / 'Patients_CT'} "
            "(looked for Patients_CT/<NNN>/brain/<SliceNumber>.jpg)."
        )
    if missing:
        print(f"warning: {missing} of the slices in {table} have no image and are left out", file=sys.stderr)
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
        marker = LABEL_FILES[name]
        if (data_dir / name / marker).is_file():
            roots[name] = data_dir / name
        elif len(names) == 1 and (data_dir / marker).is_file():  # the dataset's own folder (Kaggle: head_ct/ inside)
            roots[name] = data_dir
        elif (data_dir / name).is_dir():
            roots[name] = data_dir / name
        elif len(names) == 1 and data_dir.is_dir():
            roots[name] = data_dir
        else:
            raise paths.DataNotFound(f"{data_dir / name} not found. {paths.HOW_TO_GET_DATA}")
    return roots


def preprocess_fingerprint(source: bytes | None = None) -> str:
    """A short digest of the preprocessing code (ml/preprocess.py): part of every cache file name, so a change to
    cropping, windowing or resizing never trains on arrays cached by the old code."""
    if source is None:
        source = Path(preprocess.__file__).read_bytes()
    return hashlib.sha1(source).hexdigest()[:10]


def cache_file(scans: Sequence[Scan], size: int, kind: str = "") -> Path:
    """Where the preprocessed slices (kind "") or masks (kind "masks") of `scans` (one dataset) are cached: keyed by
    dataset, size, the scans and their files (the mask files too, for masks), and the preprocessing code."""
    name = scans[0].dataset + (f"_{kind}" if kind else "")

    def files(scan: Scan) -> list:
        masks = [m for m in scan.mask_paths or [] if m is not None] if kind == "masks" else []
        return [*scan.slice_paths, *masks]

    digest = hashlib.sha1("|".join(f"{s.key}:{_files_signature(files(s))}" for s in scans).encode())
    return paths.cache_dir() / f"{name}_{size}_{preprocess_fingerprint()}_{digest.hexdigest()[:12]}.npz"


def _files_signature(files: Sequence[Path]) -> str:
    """The files' paths, sizes and modification times: a file replaced in place (an external test set rewritten
    under the same names) gets a new cache entry instead of the old file's arrays."""
    parts = []
    for f in files:
        st = Path(f).stat()
        parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def load_slices(scans: Sequence[Scan], *, size: int, cache: bool = True, transform=None) -> dict[str, np.ndarray]:
    """Preprocessed uint8 slices (T x size x size) per scan key, cached under ml.paths.cache_dir().

    JPEG decoding of 650x650 slices dominates epoch time, so training caches the cropped, resized uint8 arrays.
    `transform` (uint8 slice -> uint8 slice) runs before cropping; with it nothing is cached.
    """
    use_cache = cache and transform is None

    def build(group: list[Scan]) -> dict[str, np.ndarray]:
        arrays = {}
        for scan in group:
            slices = []
            for p in scan.slice_paths:
                raw = load_slice(p)
                if transform is not None:
                    raw = transform(raw)
                slices.append(crop_resize(raw, size=size))
            arrays[scan.scan_id] = np.stack(slices)
        return arrays

    return _per_dataset_cached(scans, size, "", build, cache=use_cache)


def _per_dataset_cached(scans: Sequence[Scan], size: int, kind: str, build, *, cache: bool, compress: bool = False):
    """Arrays per scan key ("dataset/id"), built by `build(scans of one dataset) -> {scan id: array}` and cached per
    dataset in `cache_file(..., kind)` (written to a temporary file, then renamed, so a reader never sees half)."""
    out: dict[str, np.ndarray] = {}
    by_dataset: dict[str, list[Scan]] = {}
    for scan in scans:
        by_dataset.setdefault(scan.dataset, []).append(scan)
    for name, group in by_dataset.items():
        file = cache_file(group, size, kind)
        if cache and file.is_file():
            with np.load(file) as stored:
                out.update({f"{name}/{k}": stored[k] for k in stored.files})
            continue
        arrays = build(group)
        if cache:
            tmp = file.with_suffix(".tmp.npz")
            (np.savez_compressed if compress else np.savez)(tmp, **arrays)
            tmp.replace(file)
        out.update({f"{name}/{k}": v for k, v in arrays.items()})
    return out


def mask_on_input(slice_u8: np.ndarray, mask_u8: np.ndarray, *, size: int) -> np.ndarray:
    """A hemorrhage mask brought onto the model input of its slice: cropped with the slice's head box and resized
    as `crop_resize` resizes the slice (bilinear), uint8 (255: bleed). The mask file is a lossy JPG: above 127
    counts as bleed before resizing."""
    if mask_u8.shape != slice_u8.shape:
        raise ValueError(f"mask shape {mask_u8.shape} differs from its slice's {slice_u8.shape}")
    top, bottom, left, right = preprocess.head_bbox(slice_u8)
    box = np.where(mask_u8[top:bottom, left:right] > 127, 255, 0).astype(np.uint8)
    return np.asarray(Image.fromarray(np.ascontiguousarray(box)).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def load_masks(scans: Sequence[Scan], *, size: int, cache: bool = True) -> dict[str, np.ndarray]:
    """Hemorrhage masks on the model input (T x size x size uint8, see `mask_on_input`) per scan key, for the scans
    whose dataset has masks (CT-ICH; `mask_paths` set). A slice without a mask file gets an all-zero mask: CT-ICH
    draws one for every bleeding slice. Cached like the slices."""

    def build(group: list[Scan]) -> dict[str, np.ndarray]:
        arrays = {}
        for scan in group:
            masks = []
            for slice_path, mask_path in zip(scan.slice_paths, scan.mask_paths, strict=True):
                if mask_path is None:
                    masks.append(np.zeros((size, size), np.uint8))
                else:
                    masks.append(mask_on_input(load_slice(slice_path), load_slice(mask_path), size=size))
            arrays[scan.scan_id] = np.stack(masks)
        return arrays

    with_masks = [scan for scan in scans if scan.mask_paths is not None]
    return _per_dataset_cached(with_masks, size, "masks", build, cache=cache, compress=True)


# Pearson correlation of 32 x 32 thumbnails of the model inputs. Across the 200 Head CT images the median pair is 0.67
# and the 99th percentile 0.88; every pair at 0.95 or above that was looked at is one image twice (re-exported, another
# window, cropped) or neighbouring slices of one scan, and no such group mixes labels.
DUPLICATE_CORRELATION = 0.95


def group_near_duplicates(
    scans: Sequence[Scan], arrays: dict[str, np.ndarray], *, threshold: float = DUPLICATE_CORRELATION
) -> list[list[str]]:
    """Join single-image scans of one dataset whose model inputs are near-identical into one group (single linkage
    over pairs with thumbnail correlation >= threshold) and set `scan.group`. Series keep their own group: a series
    is one patient. Returns the groups with more than one member (sorted scan ids)."""
    singles = [s for s in scans if len(s.slice_paths) == 1 and s.key in arrays]
    found: list[list[str]] = []
    for name in sorted({s.dataset for s in singles}):
        group = [s for s in singles if s.dataset == name]
        thumbs = []
        for s in group:
            t = np.asarray(Image.fromarray(arrays[s.key][0]).resize((32, 32), Image.BOX), dtype=np.float64).ravel()
            thumbs.append((t - t.mean()) / (t.std() or 1.0))
        x = np.stack(thumbs)
        corr = x @ x.T / x.shape[1]
        parent = list(range(len(group)))
        for i, j in zip(*np.nonzero(np.triu(corr, 1) >= threshold), strict=True):
            parent[_root(parent, int(i))] = _root(parent, int(j))
        members: dict[int, list[Scan]] = {}
        for i, s in enumerate(group):
            members.setdefault(_root(parent, i), []).append(s)
        for ms in members.values():
            ids = sorted(m.scan_id for m in ms)
            for m in ms:
                m.group = ids[0] if len(ids) > 1 else ""
            if len(ids) > 1:
                found.append(ids)
    return sorted(found)


def _root(parent: list[int], i: int) -> int:
    """Union-find root with path halving."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _class_groups(scans: Sequence[Scan], rng: np.random.Generator) -> list[tuple[int, list[list[str]]]]:
    """Per class (a group's class is its highest label): its groups of scan ids, shuffled with `rng`. With only
    one-scan groups this is the shuffled sorted ids of each class, as before groups existed."""
    members: dict[str, list[Scan]] = {}
    for s in sorted(scans, key=lambda s: s.scan_id):
        members.setdefault(s.group_id, []).append(s)
    out = []
    for label in sorted({s.label for s in scans}):
        groups = sorted([m.scan_id for m in ms] for ms in members.values() if max(m.label for m in ms) == label)
        out.append((label, [groups[i] for i in rng.permutation(len(groups))]))
    return out


def split_ids(scans: Sequence[Scan], *, seed: int, fractions=(0.70, 0.15, 0.15)) -> dict[str, list[str]]:
    """Stratified train/val/test split of scan ids that never separates a group (a patient: one CT-ICH series; one
    Head CT image or its near-duplicates, see `group_near_duplicates`). Each class's groups are shuffled with the
    seed and dealt to train, then validation, then test by scan count (at least one group of each class in val and
    test when the class has 3+ scans)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for _label, groups in _class_groups(scans, rng):
        n = sum(len(g) for g in groups)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val, n_test = max(1, n_val), max(1, n_test)
        n_train = n - n_val - n_test
        taken = {"train": 0, "val": 0}
        for g in groups:
            part = "train" if taken["train"] < n_train else "val" if taken["val"] < n_val else "test"
            if part != "test":
                taken[part] += len(g)
            parts[part] += g
    return {k: sorted(v) for k, v in parts.items()}


def inner_split(scans: Sequence[Scan], *, seed: int, fraction: float = 0.15) -> tuple[list[str], list[str]]:
    """Stratified train/validation split inside a CV training fold (`fraction` of each class's scans, at least one
    group, to validation), groups kept whole."""
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for _label, groups in _class_groups(scans, rng):
        n_val = max(1, int(round(fraction * sum(len(g) for g in groups))))
        in_val = 0
        for g in groups:
            if in_val < n_val:
                val += g
                in_val += len(g)
            else:
                train += g
    return sorted(train), sorted(val)


def kfold_ids(scans: Sequence[Scan], *, k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Stratified k-fold over patients: list of (train ids, test ids). Groups stay whole (StratifiedGroupKFold);
    when every scan is its own group the folds are plain StratifiedKFold's, as before groups existed."""
    ids = np.array([s.scan_id for s in scans])
    labels = np.array([s.label for s in scans])
    groups = np.array([s.group_id for s in scans])
    if len(set(groups.tolist())) < len(ids):
        folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(ids, labels, groups)
    else:
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(ids, labels)
    return [(sorted(ids[a].tolist()), sorted(ids[b].tolist())) for a, b in folds]
