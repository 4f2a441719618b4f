"""Patient k-fold cross-validation on tiny synthetic data: disjoint test folds, every patient scored once."""

from __future__ import annotations

import pytest

from ml.benchmark import merge_cv, run_cv


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


TINY = dict(epochs=1, size=48, encoder="small", save=False, extra_train="head_ct", device="cpu")


def test_folds_run_apart_merge_into_the_record_of_the_whole_run(synthetic_root):
    whole = run_cv("ct_ich", 3, data_dir=synthetic_root, **TINY)
    first = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[0], **TINY)
    rest = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[2, 1], **TINY)
    assert [f["fold"] for f in first["per_fold"]] == [0] and [f["fold"] for f in rest["per_fold"]] == [1, 2]
    assert rest["only_folds"] == [1, 2] and whole["only_folds"] is None

    merged = merge_cv([rest, first])
    assert [f["fold"] for f in merged["per_fold"]] == [0, 1, 2]
    # Same folds and seeds on the CPU: the joined record is the whole run's, pooled figures included.
    for key in ("scan_summary", "slice_summary", "pooled_scan_auc", "pooled_slice_auc"):
        assert merged[key] == whole[key], key
    assert merged["pooled_sensitivity_at_specificity_0.90"] == whole["pooled_sensitivity_at_specificity_0.90"]
    assert merged["tta_hflip"]["pooled_scan_auc"] == whole["tta_hflip"]["pooled_scan_auc"]
    assert [m["folds"] for m in merged["merged_from"]] == [[1, 2], [0]]
    # Every case keeps its slice labels beside its out-of-fold slice probabilities.
    case = next(iter(merged["per_fold"][0]["cases"].values()))
    assert len(case["slice_p"]) == len(case["slice_labels"]) == 4

    with pytest.raises(ValueError, match="overlap"):
        merge_cv([first, whole])
    with pytest.raises(ValueError, match="max_epochs"):
        merge_cv([first, dict(rest, max_epochs=2)])
    with pytest.raises(ValueError, match="only-folds"):
        run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[3], **TINY)

    # Another training seed: the same test patients, other weights, and not the same recipe for merge_cv.
    seeded = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[0], train_seed=7, **TINY)
    assert first["train_seed"] == 0 and seeded["train_seed"] == 7
    cases, seeded_cases = first["per_fold"][0]["cases"], seeded["per_fold"][0]["cases"]
    assert sorted(cases) == sorted(seeded_cases)
    assert any(cases[k]["slice_p"] != seeded_cases[k]["slice_p"] for k in cases)
    with pytest.raises(ValueError, match="train_seed"):
        merge_cv([seeded, rest])
    # Records from before mask supervision existed are unsupervised runs: they merge with weight 0, not with 1.
    assert first["seg_weight"] == 0.0
    old = {k: v for k, v in rest.items() if k != "seg_weight"}
    assert merge_cv([first, old])["seg_weight"] == 0.0
    with pytest.raises(ValueError, match="seg_weight"):
        merge_cv([dict(first, seg_weight=1.0), old])
    masked = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[0], seg_weight=1.0, **dict(TINY, encoder="lite0"))
    assert masked["seg_weight"] == 1.0 and sorted(masked["per_fold"][0]["cases"]) == sorted(cases)
