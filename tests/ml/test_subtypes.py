"""CT-ICH errors by hemorrhage type and bleed size, read from a CV record's out-of-fold scores."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from ml import data as mldata
from ml import metrics, subtypes
from ml.report import _subtype_lines


def _record(scans, slice_scores) -> dict:
    """A two-fold CT-ICH CV record whose cases hold the given per-slice probabilities (max-slice pooling)."""
    folds = []
    for k, part in enumerate((scans[:4], scans[4:])):
        cases = {}
        for s in part:
            p = slice_scores[s.scan_id]
            cases[s.key] = {"label": s.label, "head": 0.5, "max_slice": max(p), "mean": 0.5}
            cases[s.key] |= {"slice_p": p, "slice_labels": s.slice_labels}
        folds.append({"fold": k, "pooling": "max_slice", "cases": cases})
    return {"dataset": "ct_ich", "per_fold": folds}


def test_errors_are_broken_down_by_type_and_size_at_the_target_operating_point(synthetic_root):
    root = synthetic_root / "ct_ich"
    # Patient 2's bleed is also epidural on its slice 3 (the synthetic table marks every bleed intraparenchymal).
    table = root / "hemorrhage_diagnosis.csv"
    rows = list(csv.reader(table.open(encoding="utf-8-sig")))
    for row in rows[1:]:
        if row[:2] == ["2", "3"]:
            row[5] = "1"
    with table.open("w", newline="", encoding="utf-8-sig") as fh:
        csv.writer(fh).writerows(rows)
    scans = mldata.read_ct_ich(root)
    assert [s.scan_id for s in scans] == ["001", "002", "003", "004", "005", "006", "007"]
    rng = np.random.default_rng(0)
    scores = {s.scan_id: list(rng.uniform(0.0, 0.4, 4)) for s in scans}
    scores["001"][1:3] = [0.9, 0.8]  # found
    scores["002"][1:3] = [0.95, 0.85]  # found
    scores["003"][1:3] = [0.1, 0.2]  # missed: its bleed scores no higher than the clear slices
    types = subtypes.read_types(root)
    assert types["002"][3] == ["Intraparenchymal", "Epidural"] and types["004"][1] == []
    result = subtypes.analyse(_record(scans, scores), scans, types)

    sl, pt = result["slices"], result["patients"]
    assert (sl["negatives"], sl["positives"]) == (22, 6)
    y = [lab for s in scans for lab in s.slice_labels]
    p = [v for s in scans for v in scores[s.scan_id]]
    # The 90 %-specificity operating point agrees with the ROC-based check the report uses elsewhere.
    assert sl["found_at_specificity_0.90"] == pytest.approx(metrics.sensitivity_at_specificity(y, p, 0.90))
    assert set(sl["by_type"]) == {"Intraparenchymal", "Epidural"}
    assert sl["by_type"]["Epidural"]["slices"] == 1 and sl["by_type"]["Epidural"]["found_at_specificity_0.90"] == 1
    negatives = [v for v, lab in zip(p, y, strict=True) if lab == 0]
    expected = metrics.auc([1] * 6 + [0] * 22, [v for v, lab in zip(p, y, strict=True) if lab == 1] + negatives)
    assert sl["by_type"]["Intraparenchymal"]["auc"] == pytest.approx(expected)

    assert (pt["negatives"], pt["positives"], pt["found"]) == (4, 3, 2)
    patient_y = [s.label for s in scans]
    patient_p = [max(scores[s.scan_id]) for s in scans]
    assert pt["found"] / 3 == pytest.approx(metrics.sensitivity_at_specificity(patient_y, patient_p, 0.90))
    assert pt["by_size"]["1-3 bleeding slices"] == {"patients": 3, "found": 2}
    missed = {"key": "ct_ich/003", "fold": 0, "score": max(scores["003"]), "bleeding_slices": 2}
    assert pt["missed"] == [dict(missed, types=["Intraparenchymal"])]
    text = "\n".join(_subtype_lines({"record": "cv_x", **result}))
    assert "| Intraparenchymal | 6 |" in text and "Patients with hemorrhage found: 2 of 3" in text
    assert "1 Intraparenchymal" in text

    with pytest.raises(ValueError, match="no slice probabilities"):
        bare = _record(scans, scores)
        bare["per_fold"][0]["cases"]["ct_ich/001"]["slice_p"] = []
        subtypes.analyse(bare, scans, types)
    # Records from before slice labels were stored are read with the data folder's labels; a mismatch is refused.
    unlabelled = _record(scans, scores)
    for fold in unlabelled["per_fold"]:
        for case in fold["cases"].values():
            del case["slice_labels"]
    assert subtypes.analyse(unlabelled, scans, types) == result
    with pytest.raises(ValueError, match="not the data folder's"):
        wrong = _record(scans, scores)
        wrong["per_fold"][1]["cases"]["ct_ich/005"]["slice_labels"] = [0, 1, 0, 0]
        subtypes.analyse(wrong, scans, types)
    # A bleeding slice whose row names no type is counted as "Unspecified", not dropped.
    for row in types["001"].values():
        row.clear()
    untyped = subtypes.analyse(_record(scans, scores), scans, types)["slices"]["by_type"]
    assert untyped["Unspecified"]["slices"] == 2 and untyped["Intraparenchymal"]["slices"] == 4
    with pytest.raises(ValueError, match="without hemorrhage"):
        subtypes._threshold_at_specificity(np.array([]))
    with pytest.raises(ValueError, match="CT-ICH"):
        subtypes.analyse(dict(_record(scans, scores), dataset="head_ct"), scans, types)


def test_the_operating_point_keeps_specificity_and_is_the_lowest_that_does():
    negatives = np.array([0.1, 0.2, 0.3, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])  # 11: one may pass
    cut = subtypes._threshold_at_specificity(negatives)
    assert np.mean(negatives < cut) >= 0.90 and (negatives >= cut).sum() == 1
    assert np.mean(negatives < 0.9) < 0.90, "any lower cut flags a second negative"


def test_the_shipped_recipe_breakdown_agrees_with_its_cv_record(data_root):
    """`python -m ml.benchmark subtypes` on the real data and the shipped recipe's CT-ICH CV record: the patients it
    finds at 90 % specificity are the record's own pooled sensitivity at that specificity, and every bleeding slice
    of the set has at least one type."""
    import json

    from ml.benchmark import RESULTS_DIR, run_subtypes

    result = run_subtypes(data_dir=data_root)
    record = json.loads((RESULTS_DIR / f"{result['record']}.json").read_text())
    pt, sl = result["patients"], result["slices"]
    assert pt["found"] / pt["positives"] == pytest.approx(record["pooled_sensitivity_at_specificity_0.90"])
    assert pt["negatives"] + pt["positives"] == sum(f["n_test"] for f in record["per_fold"])
    assert "Unspecified" not in sl["by_type"], "every bleeding slice of CT-ICH names its type"
    sizes = pt["by_size"].values()
    assert sum(r["patients"] for r in sizes) == pt["positives"] and sum(r["found"] for r in sizes) == pt["found"]
