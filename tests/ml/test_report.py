"""The results report finds the CV run of the shipped model's recipe, whatever the card's age."""

from __future__ import annotations

from ml import report


def _cv(name: str, **settings) -> dict:
    base = {"variant": "lstmgru", "dataset": "ct_ich", "extra_train": "head_ct", "window": 0, "max_epochs": 14}
    base.update(settings)
    return {**base, "_name": name}


def test_shipped_recipe_cv_matches_encoder_freezing_and_stopping(monkeypatch):
    runs = [
        _cv("cv_a_short", freeze_blocks=3, patience=4, min_epochs=1),
        _cv("cv_b_long_unfrozen", freeze_blocks=0, patience=8, min_epochs=4, max_epochs=40, train_seed=0, seed=0),
        _cv("cv_c_long_unfrozen_seed1", freeze_blocks=0, patience=8, min_epochs=4, max_epochs=40, train_seed=1, seed=0),
    ]
    monkeypatch.setattr(report, "_cv_runs", lambda dataset: runs)
    old_card = {  # written before the numbers were on the card: the words say them
        "training": {"window": 0, "frozen": "stem + first 3 blocks", "early_stopping": "patience 4 on the validation"
                     " AUC score", "max_epochs": 14},
    }  # fmt: skip
    assert report.card_stopping(old_card) == (3, 4, 1, 14)
    assert report.shipped_recipe_cv("ct_ich", old_card)["_name"] == "cv_a_short"
    new_card = {
        "training": {"window": 0, "frozen": "none (whole encoder trained)", "freeze_blocks": 0, "patience": 8,
                     "min_epochs": 4, "max_epochs": 40},
    }  # fmt: skip
    # Of the two seeds of that recipe, the one the card's model trains with (the default seed).
    assert report.shipped_recipe_cv("ct_ich", new_card)["_name"] == "cv_b_long_unfrozen"
    assert report.shipped_recipe_cv("ct_ich", {"training": dict(new_card["training"], patience=5)}) is None
    # A mask-supervised run of the shipped recipe is another recipe: never the shipped model's CV, unless its card
    # says it was trained so.
    runs.insert(0, _cv("cv_a_short_seg", freeze_blocks=3, patience=4, min_epochs=1, seg_weight=1.0))
    assert report.shipped_recipe_cv("ct_ich", old_card)["_name"] == "cv_a_short"
    seg_card = {"training": dict(old_card["training"], seg_weight=1.0)}
    assert report.shipped_recipe_cv("ct_ich", seg_card)["_name"] == "cv_a_short_seg"
    assert "mask supervision (weight 1)" in report._recipe(runs[0], "none")
    # So is a run trained in random narrower display windows.
    runs.insert(0, _cv("cv_a_short_wa", freeze_blocks=3, patience=4, min_epochs=1, window_aug=0.5))
    assert report.shipped_recipe_cv("ct_ich", old_card)["_name"] == "cv_a_short"
    wa_card = {"training": dict(old_card["training"], window_aug=0.5)}
    assert report.shipped_recipe_cv("ct_ich", wa_card)["_name"] == "cv_a_short_wa"
    assert "50 % of series in a random narrower window" in report._recipe(runs[0], "none")
    # An ensemble card's CV is the record of its members' averaged scores, and a single model's never is.
    pair = _cv("cv_pair", freeze_blocks=3, patience=4, min_epochs=1, train_seed=[0, 1], ensemble_of=["a", "b"])
    runs.append(pair)
    ens_card = {**old_card, "architecture": {"encoder": "lite0", "members": 2}}
    assert report.shipped_recipe_cv("ct_ich", ens_card)["_name"] == "cv_pair"
    assert report.shipped_recipe_cv("ct_ich", old_card)["_name"] == "cv_a_short"
    assert report.shipped_recipe_cv("ct_ich", {**old_card, "architecture": {"members": 3}}) is None
    assert "ensemble of training seeds 0 + 1 (logits averaged)" in report._recipe(dict(pair, seed=0), "none")


def test_recipe_names_say_what_differs():
    label = report._recipe(
        {
            "variant": "lstmgru",
            "dataset": "ct_ich",
            "extra_train": "head_ct",
            "window": 0,
            "freeze_blocks": 0,
            "patience": 8,
            "seed": 0,
            "train_seed": 2,
            "merged_from": [{"folds": [0, 1], "device": "NVIDIA H100"}, {"folds": [2], "device": "cpu, 2 threads"}],
            "note": "rerun that keeps slice probabilities",
        },
        "none",
    )
    words_expected = ("whole encoder trained", "patience 8", "training seed 2", "folds 0,1 on NVIDIA H100 + 2 on cpu")
    for words in (*words_expected, "rerun that keeps slice probabilities"):
        assert words in label


def test_input_check_section_counts_each_group_and_names_the_pictures_let_through():
    from ml.report import _inputcheck_lines

    ic = {
        "model_on_pictures": {
            "version": "v1", "threshold": 0.5, "probabilities": {"cat": 0.74, "coins": 0.8, "ramp": 1.0}
        },
        "ms_per_slice": 9.5,
        "ms_per_slice_shape": [512, 512],
        "groups": {
            "Head CT images": {"scans": 3, "slices": 3, "verdicts": {"ok": 3, "warn": 0, "refuse": 0},
                               "slices_failing": {}, "flagged": {}},
            "Pictures that are not CT": {
                "scans": 3, "slices": 3, "verdicts": {"ok": 1, "warn": 1, "refuse": 1},
                "slices_failing": {"no_skull": 2, "colour": 1},
                "flagged": {"cat": {"verdict": "refuse"}, "ramp": {"verdict": "warn"}},
            },
        },
    }  # fmt: skip
    text = "\n".join(_inputcheck_lines(ic))
    assert "cat 0.74, coins 0.80, ramp 1.00." in text and "9.5 ms per slice of 512 x 512" in text
    assert "| Head CT images | 3 | 3 | 3 | 0 | 0 | – |" in text
    assert "| Pictures that are not CT | 3 | 3 | 1 | 1 | 1 | no_skull 2, colour 1 |" in text
    assert "Pictures only warned about: ramp; passed: coins" in text
    assert _inputcheck_lines(None) == []


def test_windows_section_shows_the_shipped_model_and_each_candidate_on_validation():
    def record(version, split, found, window_aug=0.0):
        row = {"slice_auc": 0.9, "slice_sensitivity": 0.8, "slice_specificity": 0.7, "patient_auc": 1.0}
        row |= {"patients_found": found, "patients_positive": 4, "patients_cleared": 6, "patients_negative": 6}
        return {
            "version": version,
            "split": split,
            "window_aug": window_aug,
            "patients": 10,
            "slices": 300,
            "thresholds": {"slice": 0.2, "series": 0.5},
            "windows": {"40/120 (the model's)": row, "stroke 40/40": dict(row, patients_found=found - 1)},
        }

    shipped = record("v-shipped", "test", 4)
    text = "\n".join(report._windows_lines(shipped, [record("v-shipped", "val", 3), record("v-new", "val", 2, 0.5)]))
    assert "Training sees only a ±10 % contrast jitter" in text
    assert "the shipped model, at its own thresholds" in text
    assert "candidate `v-new`, trained with 50 % of its series in a random narrower window" in text
    assert text.count("| stroke 40/40 |") == 3
    assert "| stroke 40/40 | 0.900 | 80.0 % / 70.0 % | 1.000 | 1 of 4 | 6 of 6 |" in text
    assert report._windows_lines(None, [record("v-new", "val", 2)]) == []
