"""Patient k-fold cross-validation on tiny synthetic data: disjoint test folds, every patient scored once."""

from __future__ import annotations

import pytest

from ml import metrics
from ml.benchmark import ensemble_cv, merge_cv, run_cv
from ml.model import POOLINGS


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


def test_ensemble_record_rebuilds_the_scores_hemo_ensemble_gives():
    """The CV pair's scores come from stored probabilities; they must be what HemoEnsemble (mean of the members'
    logits) outputs for the same members, under the scan head and the max slice."""
    import torch

    from ml.model import HemoEnsemble, HemoNet, scan_probability

    tiny = {"encoder": "small", "recurrent": True, "in_channels": 1, "embed": 16, "hidden": 8, "dropout": 0.0}
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(HemoNet(**tiny, pretrained=False).eval())
    x = torch.randn(1, 6, 1, 32, 32)
    records = []
    with torch.no_grad():
        for seed, member in enumerate(members):
            out = member(x)
            case = {"label": 1, **{p: float(scan_probability(out, p)[0]) for p in ("head", "max_slice", "mean")}}
            case["slice_p"] = torch.softmax(out["slice_logits"], -1)[0, :, 1].tolist()
            case["slice_labels"] = [0, 0, 1, 1, 0, 0]
            fold = {"fold": 0, "n_test": 1, "pooling": "max_slice", "threshold": 0.4 + 0.2 * seed, "epochs_run": 3}
            fold.update(best_epoch=2, minutes=1.0, cases={"ct_ich/001": case})
            record = {"dataset": "ct_ich", "variant": "lstmgru", "seed": 0, "train_seed": seed}
            records.append(dict(record, per_fold=[fold]))
        both = HemoEnsemble(members)(x)
    pair = ensemble_cv(records, ["a", "b"])
    case = pair["per_fold"][0]["cases"]["ct_ich/001"]
    for pooling in ("head", "max_slice", "mean"):
        assert case[pooling] == pytest.approx(float(scan_probability(both, pooling)[0]), abs=1e-5), pooling
    assert case["slice_p"] == pytest.approx(torch.softmax(both["slice_logits"], -1)[0, :, 1].tolist(), abs=1e-5)
    # Both members chose max slice on validation; the threshold's log-odds are the mean of theirs (0.4 and 0.6).
    assert pair["per_fold"][0]["pooling"] == "max_slice" and pair["per_fold"][0]["threshold"] == pytest.approx(0.5)
    assert pair["train_seed"] == [0, 1] and pair["ensemble_of"] == ["a", "b"] and "tta_hflip" not in pair


def test_training_seeds_on_the_same_folds_join_into_an_ensemble_record(synthetic_root):
    a = run_cv("ct_ich", 3, data_dir=synthetic_root, **TINY)
    b = run_cv("ct_ich", 3, data_dir=synthetic_root, train_seed=5, **TINY)
    pair = ensemble_cv([a, b], ["a", "b"])
    assert [f["fold"] for f in pair["per_fold"]] == [0, 1, 2] and sum(f["n_test"] for f in pair["per_fold"]) == 7
    for fa, fb, fp in zip(a["per_fold"], b["per_fold"], pair["per_fold"], strict=True):
        for key, case in fp["cases"].items():
            lo, hi = sorted((fa["cases"][key]["head"], fb["cases"][key]["head"]))
            assert lo - 1e-9 <= case["head"] <= hi + 1e-9, "a mean of log-odds lies between the members"
            assert len(case["slice_p"]) == len(case["slice_labels"]) == 4
    assert pair["pooled_slice_auc"] is not None and pair["slice_summary"]["auc"]["n"] == 3
    # Both runs kept their validation cases: the pair decides every fold on its own averaged validation scores.
    assert pair["thresholds"].startswith("per fold on the pair's own validation scores")
    for fa, fp in zip(a["per_fold"], pair["per_fold"], strict=True):
        assert fp["decided_on"] == "the pair's validation scores"
        val = fp["validation_cases"]
        assert sorted(val) == sorted(fa["validation_cases"]) and not set(val) & set(fp["cases"])
        y = [c["label"] for c in val.values()]
        aucs = {p: metrics.auc(y, [c[p] for c in val.values()]) or 0.0 for p in POOLINGS}
        assert aucs[fp["pooling"]] == max(aucs.values()), "the pooling with the best validation AUC"
        assert fp["threshold"] == metrics.youden_threshold(y, [c[fp["pooling"]] for c in val.values()])
    # Older records keep no validation cases: their folds fall back to the members' choices and say so.
    old_b = dict(b, per_fold=[{k: v for k, v in f.items() if k != "validation_cases"} for f in b["per_fold"]])
    approx = ensemble_cv([a, old_b], ["a", "old"])
    assert {f["decided_on"] for f in approx["per_fold"]} == {"the members' choices (approximate)"}
    assert approx["thresholds"].startswith("approximate in folds whose records keep no validation scores (0, 1, 2)")
    for fa, fb, fp in zip(a["per_fold"], b["per_fold"], approx["per_fold"], strict=True):
        assert fp["pooling"] == (fa["pooling"] if fa["pooling"] == fb["pooling"] else "mean")
        assert "validation_cases" not in fp
    assert approx["pooled_slice_auc"] == pair["pooled_slice_auc"], "the scores are the same; only decisions differ"

    with pytest.raises(ValueError, match="repeat a training seed"):
        ensemble_cv([a, a], ["a", "a"])
    with pytest.raises(ValueError, match="max_epochs"):
        ensemble_cv([a, dict(b, max_epochs=9)], ["a", "b"])
    with pytest.raises(ValueError, match="different folds"):
        ensemble_cv([a, dict(b, per_fold=b["per_fold"][:2])], ["a", "b"])
    # A record of series that kept no slice probabilities (older runs): only the scan head is rebuilt exactly.
    bare_folds = [dict(f, cases={k: dict(c, slice_p=[]) for k, c in f["cases"].items()}) for f in b["per_fold"]]
    bare = dict(b, per_fold=bare_folds)
    head_only = ensemble_cv([a, bare], ["a", "bare"])
    assert {f["pooling"] for f in head_only["per_fold"]} == {"head"} and "pooled_slice_auc" not in head_only
    for fold in head_only["per_fold"]:  # decided on validation: the threshold is the scan head's own there
        val = fold["validation_cases"].values()
        assert fold["threshold"] == metrics.youden_threshold([c["label"] for c in val], [c["head"] for c in val])


def test_context_runs_are_their_own_recipe_and_keep_validation_scores(synthetic_root):
    """--context reaches the CV's model and record; a record with neighbours never merges with one without (older
    records, written before the option, count as without); every fold keeps its inner validation cases."""
    plain = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[0], **TINY)
    stacked = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[1], context=1, **TINY)
    assert plain["context"] == 0 and stacked["context"] == 1
    with pytest.raises(ValueError, match="context"):
        merge_cv([plain, stacked])
    older = {k: v for k, v in plain.items() if k != "context"}
    rest = run_cv("ct_ich", 3, data_dir=synthetic_root, only_folds=[1, 2], **TINY)
    assert merge_cv([older, rest])["context"] == 0
    for fold in plain["per_fold"] + stacked["per_fold"]:
        val = fold["validation_cases"]
        assert val and not set(val) & set(fold["cases"]), "the inner validation patients are not the test fold's"
        assert all(len(c["slice_p"]) == len(c["slice_labels"]) for c in val.values())
