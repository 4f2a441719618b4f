"""Where the model fails on CT-ICH: out-of-fold scores of a CV record broken down by hemorrhage type and bleed size.

CT-ICH labels every slice with its hemorrhage types (intraventricular, intraparenchymal, subarachnoid, epidural,
subdural). From a CV record that keeps slice probabilities this gives, pooled over the folds:
- per type, the AUC of its slices against every slice without hemorrhage and the share of them found at the slice
  operating point of 90 % specificity;
- per patient with hemorrhage, the number of bleeding slices and its types, and whether the patient is found at
  the patient operating point of 90 % specificity (the target's operating point).
Nothing here trains or tunes: it reads saved out-of-fold scores.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ml import metrics, paths

TYPES = ("Intraventricular", "Intraparenchymal", "Subarachnoid", "Epidural", "Subdural")
SPECIFICITY = 0.90


def read_types(root: str | Path) -> dict[str, dict[int, list[str]]]:
    """CT-ICH's hemorrhage_diagnosis.csv as {patient id (3 digits): {slice number: [its hemorrhage types]}}."""
    table = Path(root) / "hemorrhage_diagnosis.csv"
    if not table.is_file():
        raise paths.DataNotFound(f"{table} not found. {paths.HOW_TO_GET_DATA}")
    out: dict[str, dict[int, list[str]]] = {}
    with table.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            types = [t for t in TYPES if int(float(row[t] or 0)) == 1]
            out.setdefault(f"{int(row['PatientNumber']):03d}", {})[int(row["SliceNumber"])] = types
    return out


def _threshold_at_specificity(negatives: np.ndarray, specificity: float = SPECIFICITY) -> float:
    """The lowest score threshold (p >= t is positive) that keeps at least `specificity` of the negatives below."""
    if not len(negatives):
        raise ValueError("an operating point at a specificity needs cases without hemorrhage")
    allowed = int(np.floor((1 - specificity) * len(negatives) + 1e-9))  # negatives that may reach the threshold
    ranked = np.sort(negatives)[::-1]
    # Above the (allowed + 1)-th highest negative; ties with it would flag it too.
    return float(np.nextafter(ranked[allowed], np.inf)) if allowed < len(ranked) else float(ranked[-1])


def analyse(record: dict, scans: list, types: dict[str, dict[int, list[str]]]) -> dict:
    """The breakdown of a CT-ICH CV record (see the module docstring). `scans`: ml.data.read_ct_ich's scans (their
    slice names give the slice numbers in the order the record's slice probabilities follow)."""
    if record.get("dataset") != "ct_ich":
        raise ValueError(f"needs a CT-ICH CV record, not {record.get('dataset')!r}")
    by_key = {s.key: s for s in scans}
    slice_rows, patients = [], []
    for fold in record["per_fold"]:
        for key, case in fold["cases"].items():
            scan = by_key.get(key)
            if scan is None:
                raise ValueError(f"{key} is not in the data folder the record is read against")
            if len(case.get("slice_p") or []) != len(scan.slice_names):
                raise ValueError(f"{key}: the record keeps no slice probabilities (or other slices) for it")
            if case.get("slice_labels") is not None and list(case["slice_labels"]) != list(scan.slice_labels):
                raise ValueError(f"{key}: the record's slice labels are not the data folder's")
            numbers = [int(Path(n).stem) for n in scan.slice_names]
            # The labels come from the data folder (older records keep slice probabilities without labels); a
            # bleeding slice whose row names no type still counts, as "Unspecified".
            slice_types = [
                (types[scan.scan_id].get(n) or ["Unspecified"]) if label else []
                for n, label in zip(numbers, scan.slice_labels, strict=True)
            ]
            for p, label, kinds in zip(case["slice_p"], scan.slice_labels, slice_types, strict=True):
                slice_rows.append((float(p), int(label), kinds))
            bleeding = [k for k in slice_types if k]
            patients.append(
                {
                    "key": key,
                    "fold": fold["fold"],
                    "label": int(case["label"]),
                    "score": float(case[fold["pooling"]]),
                    "bleeding_slices": len(bleeding),
                    "types": sorted({t for k in bleeding for t in k}),
                }
            )
    negatives = np.array([p for p, label, _ in slice_rows if label == 0])
    slice_cut = _threshold_at_specificity(negatives)
    by_type = {}
    for kind in (*TYPES, "Unspecified"):
        positives = np.array([p for p, label, kinds in slice_rows if label == 1 and kind in kinds])
        if not len(positives):
            continue
        y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        by_type[kind] = {
            "slices": len(positives),
            "auc": metrics.auc(y, np.r_[positives, negatives]),
            "found_at_specificity_0.90": float(np.mean(positives >= slice_cut)),
        }
    all_pos = np.array([p for p, label, _ in slice_rows if label == 1])
    negative_patients = np.array([r["score"] for r in patients if r["label"] == 0])
    patient_cut = _threshold_at_specificity(negative_patients)
    for r in patients:
        r["found"] = bool(r["score"] >= patient_cut) if r["label"] == 1 else None
    bleeding = [r for r in patients if r["label"] == 1]
    sizes = {}
    for name, lo, hi in (("1-3 bleeding slices", 1, 3), ("4 or more bleeding slices", 4, 10**6)):
        group = [r for r in bleeding if lo <= r["bleeding_slices"] <= hi]
        sizes[name] = {"patients": len(group), "found": sum(r["found"] for r in group)}
    return {
        "specificity": SPECIFICITY,
        "slices": {
            "negatives": len(negatives),
            "positives": len(all_pos),
            "found_at_specificity_0.90": float(np.mean(all_pos >= slice_cut)),
            "threshold": slice_cut,
            "by_type": by_type,
        },
        "patients": {
            "negatives": len(negative_patients),
            "positives": len(bleeding),
            "found": sum(r["found"] for r in bleeding),
            "threshold": patient_cut,
            "by_size": sizes,
            "missed": sorted(
                (
                    {k: r[k] for k in ("key", "fold", "score", "bleeding_slices", "types")}
                    for r in bleeding
                    if not r["found"]
                ),
                key=lambda r: r["bleeding_slices"],
            ),
        },
    }
