"""Patient k-fold cross-validation on tiny synthetic data: disjoint test folds, every patient scored once."""

from __future__ import annotations

from ml.benchmark import run_cv


def test_cv_scores_every_patient_once_and_reports_both_tta_variants(synthetic_root):
    result = run_cv(
        "ct_ich",
        3,
        epochs=2,
        size=48,
        encoder="small",
        schedule="cosine",
        smooth=2,
        data_dir=synthetic_root,
        save=False,
        extra_train="head_ct",
    )
    assert result["folds"] == 3 and len(result["per_fold"]) == 3
    assert sum(f["n_test"] for f in result["per_fold"]) == 7  # the 7 synthetic patients, each tested once
    assert result["schedule"] == "cosine" and result["encoder"] == "small" and result["extra_train"] == "head_ct"
    for fold in result["per_fold"]:
        assert 0.0 <= fold["scan"]["accuracy"] <= 1.0
        assert "tta_hflip" in fold and "slice" in fold
    other = result["tta_hflip"]
    assert other["scan_summary"]["accuracy"]["n"] == 3
    assert "pooled_slice_auc" in other and "pooled_scan_auc" in result
