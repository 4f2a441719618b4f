"""Benchmarks and the results report.

    python -m ml.benchmark                   # write docs/RESULTS.md from bench/results/*.json
    python -m ml.benchmark classical         # classical features + SVM/k-NN/RF and the metadata-only control
    python -m ml.benchmark cv --dataset head_ct|ct_ich --folds K [--variant lstmgru|cnn] [--epochs N]
    python -m ml.benchmark letters           # shipped model with burnt-in letters masked vs not (Head CT)
    python -m ml.benchmark dicom             # same CT-ICH slices as HU DICOM and as JPG: do the scores agree?
    python -m ml.benchmark ablation DIR      # record a CNN-only checkpoint's card (ml.train --no-recurrent)
    python -m ml.benchmark inputcheck        # the input check on the data folder and on pictures that are not CT
    python -m ml.benchmark windows           # the shipped model on test pictures exported in other display windows
    python -m ml.benchmark density           # the shipped model on held-out series made thinner, with and without slabs

Every neural number is held-out: test folds/splits are never used for early stopping, pooling or threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml import data as mldata
from ml import dicom as dcm
from ml import metrics, paths, preprocess

RESULTS_DIR = paths.REPO_ROOT / "bench" / "results"
FIGURES_DIR = paths.REPO_ROOT / "docs" / "figures"
REPORT = paths.REPO_ROOT / "docs" / "RESULTS.md"
SEED = 0


def _save(name: str, obj) -> Path:
    path = RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(obj, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)) + "\n"
    )
    return path


def _load(name: str):
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _items(layout: str, size: int, data_dir: Path | None = None, *, masks: bool = False):
    from ml.train import make_items

    root = mldata.dataset_roots(layout, data_dir or paths.data_dir())[layout]
    scans = mldata.read_layout(layout, root)
    arrays = mldata.load_slices(scans, size=size)
    mldata.group_near_duplicates(scans, arrays)
    found = mldata.load_masks(scans, size=size) if masks else None
    return scans, {it.key.split("/", 1)[1]: it for it in make_items(scans, arrays, found)}


def _scan_summary(rows: list[dict], pool: str, threshold: float) -> dict:
    y = [r["label"] for r in rows]
    p = [r["scan"][pool] for r in rows]
    m = metrics.binary_metrics(y, p, threshold)
    m["sensitivity_at_specificity_0.90"] = metrics.sensitivity_at_specificity(y, p, 0.90)
    return m


def _slice_summary(rows: list[dict], threshold: float) -> dict | None:
    multi = [r for r in rows if r["slice_labels"] is not None and len(r["slice_labels"]) > 1]
    if not multi:
        return None
    return metrics.binary_metrics(
        np.concatenate([r["slice_labels"] for r in multi]), np.concatenate([r["slice_p"] for r in multi]), threshold
    )


def run_cv(
    dataset: str,
    folds: int,
    *,
    variant: str = "lstmgru",
    epochs: int = 12,
    max_minutes: float | None = None,
    size: int = preprocess.DEFAULT_SIZE,
    seed: int = SEED,
    freeze_blocks: int = 3,
    schedule: str = "constant",
    smooth: int = 1,
    patience: int = 4,
    tta: str = "none",
    tag: str = "",
    encoder: str = "lite0",
    data_dir: Path | None = None,
    save: bool = True,
    extra_train: str | None = None,
    augment: str = "slice",
    window: int = 0,
    ema: float = 0.0,
    min_epochs: int = 1,
    device: str | None = None,
    threads: int = 2,
    train_seed: int | None = None,
    only_folds: Sequence[int] | None = None,
    seg_weight: float = 0.0,
    context: int = 0,
    window_aug: float = 0.0,
    bone_channel: bool = False,
    note: str = "",
) -> dict:
    """k-fold patient cross-validation of the neural model (inner validation split for early stopping/threshold).

    `seed` fixes the folds and the inner validation splits; fold k trains with seed `train_seed + k` (default
    `seed + k`), so runs that differ only in `train_seed` see the same data and can be averaged as an ensemble.
    After every fold the results so far go to bench/results/partial/ (a run cut short still leaves its folds);
    the finished run goes to bench/results/. `only_folds` runs those folds alone (the others are skipped, not
    recorded); `merge_cv` joins such runs of one recipe into one record."""
    import torch

    from ml.train import choose_pooling_and_threshold, fit, score_items

    if only_folds is not None and (not only_folds or not set(only_folds) <= set(range(folds))):
        raise ValueError(f"--only-folds {only_folds} must name folds among 0..{folds - 1}")
    torch.set_num_threads(threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    hardware = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {threads} threads"
    train_seed = seed if train_seed is None else train_seed
    scans, items = _items(dataset, size, data_dir, masks=seg_weight > 0)
    by_id = {s.scan_id: s for s in scans}
    # The shipped model trains on both datasets: `extra_train` adds every scan of the other one to each training
    # fold (never to validation or test), so the CV measures that recipe.
    extra = list(_items(extra_train, size, data_dir, masks=seg_weight > 0)[1].values()) if extra_train else []
    config = {
        "encoder": encoder,
        "recurrent": variant == "lstmgru",
        "in_channels": 1,
        "embed": 256,
        "hidden": 128,
        "dropout": 0.3,
        "pretrained": encoder == "lite0",
        "seg": seg_weight > 0,
        "context": context,
        "bone_channel": bone_channel,
    }
    if encoder != "lite0":
        freeze_blocks = 0
    per_fold, pooled, pooled_other = [], {}, []
    started = time.time()
    for k, (train_ids, test_ids) in enumerate(mldata.kfold_ids(scans, k=folds, seed=seed)):
        if only_folds is not None and k not in only_folds:
            continue
        tr, va = mldata.inner_split([by_id[i] for i in train_ids], seed=seed + k)
        t0 = time.time()
        model, history, best_epoch = fit(
            [items[i] for i in tr] + extra,
            [items[i] for i in va],
            model_config=config,
            epochs=epochs,
            seed=train_seed + k,
            device=dev,
            max_minutes=max_minutes,
            progress=False,
            freeze_blocks=freeze_blocks,
            schedule=schedule,
            smooth=smooth,
            patience=patience,
            augment=augment,
            window=window,
            ema=ema,
            min_epochs=min_epochs,
            seg_weight=seg_weight,
            window_aug=window_aug,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
        val = score_items(model, [items[i] for i in va], dev, tta=tta)
        pool, threshold, slice_threshold = choose_pooling_and_threshold(val)
        test = score_items(model, [items[i] for i in test_ids], dev, tta=tta)
        val_rows = list(val.values())
        rows = list(test.values())
        fold = {
            "fold": k,
            "device": hardware,
            "n_test": len(test_ids),
            "pooling": pool,
            "threshold": threshold,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "minutes": (time.time() - t0) / 60,
            "scan": _scan_summary(rows, pool, threshold),
            "validation_scan_auc": metrics.auc([r["label"] for r in val_rows], [r["scan"][pool] for r in val_rows]),
            # Out-of-fold scan probabilities under every pooling and slice probabilities, unrounded (an
            # undertrained model's scores can differ in the sixth decimal), so pooling rules and ensembles of runs
            # that differ only in the training seed can be compared afterwards, and `merge_cv` recomputes the
            # pooled figures exactly.
            "cases": _case_records(test),
            # The inner validation cases' scores too, so an ensemble of such records can choose its pooling and
            # thresholds per fold exactly as ml.ensemble does (older records lack them).
            "validation_cases": _case_records(val),
        }
        # The other test-time augmentation on the same weights, for the TTA comparison (pooling/threshold from
        # its own validation scores).
        other = "hflip" if tta == "none" else "none"
        val_o = score_items(model, [items[i] for i in va], dev, tta=other)
        pool_o, thr_o, sthr_o = choose_pooling_and_threshold(val_o)
        scored_o = score_items(model, [items[i] for i in test_ids], dev, tta=other)
        test_ids_keys, test_o = list(scored_o), list(scored_o.values())
        fold[f"tta_{other}"] = {
            "validation_scan_auc": metrics.auc(
                [r["label"] for r in val_o.values()], [r["scan"][pool_o] for r in val_o.values()]
            ),
            "scan": _scan_summary(test_o, pool_o, thr_o),
            "slice_auc": (_slice_summary(test_o, sthr_o if sthr_o is not None else thr_o) or {}).get("auc"),
            "cases": {key: float(r["scan"][pool_o]) for key, r in zip(test_ids_keys, test_o, strict=True)},
        }
        for r in test_o:
            pooled_other.append((r["label"], r["scan"][pool_o], r["slice_p"], r["slice_labels"]))
        s = _slice_summary(rows, slice_threshold if slice_threshold is not None else threshold)
        if s:
            fold["slice"] = s
        per_fold.append(fold)
        for key, r in test.items():
            pooled[key] = {
                "label": r["label"],
                "p": r["scan"][pool],
                "slice_p": r["slice_p"].tolist(),
                "slice_labels": None if r["slice_labels"] is None else r["slice_labels"].tolist(),
            }
        print(
            json.dumps(
                {
                    "fold": k,
                    "scan_auc": fold["scan"]["auc"],
                    "acc": fold["scan"]["accuracy"],
                    "slice_auc": fold.get("slice", {}).get("auc"),
                }
            ),
            file=sys.stderr,
            flush=True,
        )
        result = _cv_result(
            per_fold,
            pooled,
            pooled_other,
            other,
            dataset=dataset,
            variant=variant,
            folds=folds,
            seed=seed,
            train_seed=train_seed,
            size=size,
            max_epochs=epochs,
            max_minutes_per_fold=max_minutes,
            freeze_blocks=freeze_blocks,
            encoder=encoder,
            extra_train=extra_train,
            # Near-duplicate Head CT images (see ml.data.group_near_duplicates) never straddle folds.
            grouped=[
                sorted(s.scan_id for s in scans if s.group == g) for g in sorted({s.group for s in scans if s.group})
            ],
            schedule=schedule,
            smooth=smooth,
            augment=augment,
            window=window,
            ema=ema,
            min_epochs=min_epochs,
            seg_weight=seg_weight,
            context=context,
            window_aug=window_aug,
            bone_channel=bone_channel,
            patience=patience,
            tta=tta,
            only_folds=None if only_folds is None else sorted(only_folds),
            **({"note": note} if note else {}),
            device=str(dev),
            hardware=hardware,
            total_minutes=(time.time() - started) / 60,
        )
        if save:
            _save(f"partial/cv_{dataset}_{variant}{tag}", dict(result, folds_done=len(per_fold)))
    if save:
        _save(f"cv_{dataset}_{variant}{tag}", result)
    return result


def _case_records(scored: dict[str, dict]) -> dict[str, dict]:
    """Scored cases as a CV record keeps them: label, scan probability under every pooling, slice probabilities and
    labels, all unrounded."""
    return {
        key: {
            "label": int(r["label"]),
            **{p: float(v) for p, v in r["scan"].items()},
            "slice_p": [float(v) for v in r["slice_p"]],
            "slice_labels": None if r["slice_labels"] is None else [int(v) for v in r["slice_labels"]],
        }
        for key, r in scored.items()
    }


def _cv_result(per_fold: list[dict], pooled: dict, pooled_other: list[tuple], other: str, **settings) -> dict:
    """A CV run's record: its settings, the folds, their mean and spread, and AUCs pooled over the folds' cases."""
    result = dict(settings, per_fold=per_fold)
    for level in ("scan", "slice"):
        for key in ("auc", "accuracy", "sensitivity", "specificity", "f1"):
            vals = [f[level][key] for f in per_fold if level in f]
            if vals:
                result.setdefault(f"{level}_summary", {})[key] = metrics.summary(vals)
    y = [v["label"] for v in pooled.values()]
    result["pooled_scan_auc"] = metrics.auc(y, [v["p"] for v in pooled.values()])
    with_slices = [v for v in pooled.values() if v["slice_labels"] and len(v["slice_labels"]) > 1]
    if with_slices:
        result["pooled_slice_auc"] = metrics.auc(
            np.concatenate([v["slice_labels"] for v in with_slices]),
            np.concatenate([v["slice_p"] for v in with_slices]),
        )
    result["pooled_sensitivity_at_specificity_0.90"] = metrics.sensitivity_at_specificity(
        y, [v["p"] for v in pooled.values()], 0.90
    )
    if other is not None:  # None: the record holds one test-time augmentation only (an ensemble's)
        result[f"tta_{other}"] = _other_tta_summary(per_fold, pooled_other, other)
    return result


def _other_tta_summary(per_fold: list[dict], pooled: list[tuple] | None, other: str) -> dict:
    """Fold means and pooled AUCs of the same CV weights scored with the other test-time augmentation. pooled:
    (label, scan p, slice p, slice labels) per case; None where not every fold kept them (pooled AUCs left out)."""
    rows = [f[f"tta_{other}"] for f in per_fold]
    out = {
        "validation_scan_auc": metrics.summary([r["validation_scan_auc"] for r in rows]),
        "scan_summary": {
            k: metrics.summary([r["scan"][k] for r in rows]) for k in ("auc", "accuracy", "sensitivity", "specificity")
        },
    }
    if pooled is not None:
        out["pooled_scan_auc"] = metrics.auc([p[0] for p in pooled], [p[1] for p in pooled])
        out["pooled_sensitivity_at_specificity_0.90"] = metrics.sensitivity_at_specificity(
            [p[0] for p in pooled], [p[1] for p in pooled], 0.90
        )
    slice_aucs = [r["slice_auc"] for r in rows if r["slice_auc"] is not None]
    if slice_aucs:
        out["slice_auc"] = metrics.summary(slice_aucs)
        multi = [p for p in pooled or [] if p[3] is not None and len(p[3]) > 1]
        if multi:
            out["pooled_slice_auc"] = metrics.auc(
                np.concatenate([p[3] for p in multi]), np.concatenate([p[2] for p in multi])
            )
    return out


# What makes two CV records one recipe on one set of folds (merge_cv checks these agree).
RECIPE_KEYS = (
    "dataset", "variant", "folds", "seed", "train_seed", "size", "max_epochs", "max_minutes_per_fold",
    "freeze_blocks", "encoder", "extra_train", "schedule", "smooth", "augment", "window", "ema", "min_epochs",
    "patience", "tta", "seg_weight", "context", "window_aug", "bone_channel",
)  # fmt: skip
# Recipe keys added after some records were written, with the value those older records imply.
RECIPE_DEFAULTS = {
    "seg_weight": 0.0,
    "ema": 0.0,
    "min_epochs": 1,
    "context": 0,
    "window_aug": 0.0,
    "bone_channel": False,
}


def _recipe(record: dict, key: str):
    return record.get(key, RECIPE_DEFAULTS.get(key))


def _check_one_recipe(records: list[dict], *, apart_from: tuple[str, ...] = ()) -> None:
    """Refuse CV records whose RECIPE_KEYS (except `apart_from`) differ from the first record's."""
    first = records[0]
    for record in records[1:]:
        differ = [k for k in RECIPE_KEYS if k not in apart_from and _recipe(record, k) != _recipe(first, k)]
        if differ:
            raise ValueError(f"not one recipe: {differ} differ")


def merge_cv(parts: list[dict]) -> dict:
    """One CV record from records of disjoint folds of one recipe (runs with `only_folds`, or the partial record of
    a run cut short), possibly from different devices: folds joined, fold summaries and the AUCs pooled over folds
    recomputed from the per-case out-of-fold probabilities. The other test-time augmentation's pooled AUCs are
    left out unless every fold kept its per-case scores."""
    _check_one_recipe(parts)
    first = parts[0]
    per_fold = sorted((f for part in parts for f in part["per_fold"]), key=lambda f: f["fold"])
    numbers = [f["fold"] for f in per_fold]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"folds overlap: {numbers}")
    for part in parts:
        for f in part["per_fold"]:
            f.setdefault("device", part.get("hardware", part.get("device", "cpu")))
    pooled, pooled_other = {}, []
    other = "hflip" if first.get("tta", "none") == "none" else "none"
    for f in per_fold:
        for key, case in f["cases"].items():
            pooled[key] = {
                "label": case["label"],
                "p": case[f["pooling"]],
                "slice_p": case.get("slice_p") or [],
                "slice_labels": case.get("slice_labels"),
            }
        other_cases = f.get(f"tta_{other}", {}).get("cases")
        if pooled_other is not None and other_cases:
            pooled_other += [(f["cases"][k]["label"], p, [], None) for k, p in other_cases.items()]
        else:
            pooled_other = None
    multi = [v for v in pooled.values() if len(v["slice_p"]) > 1]
    if any(v["slice_labels"] is None for v in multi):  # records from before the slice labels were kept
        for v in multi:
            v["slice_labels"] = None
    settings = {k: _recipe(first, k) for k in RECIPE_KEYS}
    settings["grouped"] = first.get("grouped")
    settings["merged_from"] = [
        {"folds": [f["fold"] for f in p["per_fold"]], "device": p.get("hardware")} for p in parts
    ]
    settings["device"] = " + ".join(dict.fromkeys(p.get("device", "cpu") for p in parts))
    settings["hardware"] = " + ".join(dict.fromkeys(p.get("hardware", "cpu") for p in parts))
    settings["total_minutes"] = sum(p.get("total_minutes", 0.0) for p in parts)
    return _cv_result(per_fold, pooled, pooled_other, other, **settings)


def _logit(p) -> np.ndarray:
    """Log-odds of stored probabilities (clipped: older records rounded them to five decimals)."""
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def _member_slice_p(record: dict, case: dict) -> list[float] | None:
    """A case's slice probabilities in a CV record: stored, or for a dataset of single images (Head CT) its one
    slice's, which the max-slice pooling holds; None where a record of series did not keep them."""
    if case.get("slice_p"):
        return case["slice_p"]
    return [case["max_slice"]] if record["dataset"] == "head_ct" else None


def ensemble_cv(records: list[dict], names: list[str]) -> dict:
    """The out-of-fold scores of an ensemble, rebuilt from CV records of one recipe on the same folds that differ only
    in the training seed, as `ml.model.HemoEnsemble` combines its members: per-slice and per-scan logits averaged
    (here the log-odds of the stored probabilities), then the poolings recomputed (max slice from the averaged
    slices, so it is exact only where the records keep slice probabilities; else the scan head alone).

    Where every record keeps its inner validation cases' scores (runs since the tenth session), the pair chooses its
    pooling and thresholds per fold on its own averaged validation scores, as the shipped ensemble (`ml.ensemble`)
    does. Older records keep none: per fold it then takes the pooling its members chose where they agree (else the
    mean of both poolings) and the threshold whose log-odds are the mean of theirs, so its accuracy, sensitivity
    and specificity are approximate (the record says which folds); its AUCs are threshold-free and exact either
    way."""
    from ml.model import POOLINGS
    from ml.train import choose_pooling_and_threshold

    _check_one_recipe(records, apart_from=("train_seed",))
    first = records[0]
    seeds = [r["seed"] if r.get("train_seed") is None else r["train_seed"] for r in records]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"records repeat a training seed ({seeds})")
    per_fold, pooled = [], {}
    folds = [{f["fold"]: f for f in r["per_fold"]} for r in records]
    if any(set(f) != set(folds[0]) for f in folds):
        raise ValueError("the records hold different folds")
    for k in sorted(folds[0]):
        members = [f[k] for f in folds]
        if any(set(m["cases"]) != set(members[0]["cases"]) for m in members):
            raise ValueError(f"fold {k}: the records test different cases (other folds or data)")
        rows = _averaged_cases(records, [m["cases"] for m in members])
        validation = [m.get("validation_cases") for m in members]
        slice_threshold, val_rows = None, None
        if all(v is not None for v in validation) and all(set(v) == set(validation[0]) for v in validation):
            val_rows = _averaged_cases(records, validation)
        if val_rows is not None and all(set(POOLINGS) <= set(r["scan"]) for r in val_rows):
            pooling, threshold, slice_threshold = choose_pooling_and_threshold(
                {r["key"]: dict(r, dataset=r["key"].split("/")[0]) for r in val_rows}
            )
            decided_on = "the pair's validation scores"
        else:
            val_rows = None
            chosen = {m["pooling"] for m in members}
            pooling = chosen.pop() if len(chosen) == 1 else "mean"
            threshold = float(_sigmoid(np.mean(_logit([m["threshold"] for m in members]))))
            decided_on = "the members' choices (approximate)"
        if any(pooling not in r["scan"] for r in rows):
            pooling = "head"  # the records keep no slice probabilities: the one pooling rebuilt exactly
            if val_rows is not None:  # the threshold must then be the scan head's own on validation
                threshold = metrics.youden_threshold(
                    [r["label"] for r in val_rows], [r["scan"]["head"] for r in val_rows]
                )
        fold = {
            "fold": k,
            "device": " + ".join(dict.fromkeys(m.get("device", "cpu") for m in members)),
            "n_test": members[0]["n_test"],
            "pooling": pooling,
            "threshold": threshold,
            "decided_on": decided_on,
            "epochs_run": [m["epochs_run"] for m in members],
            "best_epoch": [m["best_epoch"] for m in members],
            "minutes": sum(m["minutes"] for m in members),
            "scan": _scan_summary(rows, pooling, threshold),
            "cases": _case_records({r["key"]: r for r in rows}),
        }
        if val_rows is not None:
            fold["validation_cases"] = _case_records({r["key"]: r for r in val_rows})
        s = _slice_summary(
            [r for r in rows if len(r["slice_p"])], threshold if slice_threshold is None else slice_threshold
        )
        if s:
            fold["slice"] = s
        per_fold.append(fold)
        for r in rows:
            pooled[r["key"]] = {
                "label": r["label"],
                "p": r["scan"][pooling],
                "slice_p": r["slice_p"].tolist(),
                "slice_labels": None if r["slice_labels"] is None else r["slice_labels"].tolist(),
            }
    settings = {k: _recipe(first, k) for k in RECIPE_KEYS}
    settings.update(
        train_seed=seeds,
        ensemble_of=names,
        combine="mean of the members' log-odds per slice and per scan (as ml.model.HemoEnsemble)",
        thresholds="per fold on the pair's own validation scores (as ml.ensemble)"
        if all(f["decided_on"] == "the pair's validation scores" for f in per_fold)
        else "approximate in folds whose records keep no validation scores ("
        + ", ".join(str(f["fold"]) for f in per_fold if f["decided_on"] != "the pair's validation scores")
        + "): there the members' validation pooling where they agree (else 'mean') and the threshold with the mean "
        "of their validation thresholds' log-odds; AUCs are exact",
        grouped=first.get("grouped"),
        device=" + ".join(dict.fromkeys(r.get("device", "cpu") for r in records)),
        hardware=" + ".join(dict.fromkeys(r.get("hardware", "cpu") for r in records)),
        total_minutes=sum(r.get("total_minutes", 0.0) for r in records),
    )
    return _cv_result(per_fold, pooled, None, None, **settings)


def _averaged_cases(records: list[dict], member_cases: list[dict[str, dict]]) -> list[dict]:
    """One fold's cases as the ensemble scores them: each member's slice and scan-head log-odds averaged, the
    max-slice and mean poolings recomputed from the averaged slices (only where every member kept its slices)."""
    rows = []
    for key in member_cases[0]:
        cases = [m[key] for m in member_cases]
        slices = [_member_slice_p(r, c) for r, c in zip(records, cases, strict=True)]
        head = float(_sigmoid(np.mean(_logit([c["head"] for c in cases]))))
        scan = {"head": head}
        slice_p = None
        if all(s is not None for s in slices):
            slice_p = _sigmoid(np.mean([_logit(s) for s in slices], axis=0))
            scan["max_slice"] = float(slice_p.max())
            scan["mean"] = (head + scan["max_slice"]) / 2
        labels = cases[0].get("slice_labels") if slice_p is not None else None
        rows.append(
            {
                "key": key,
                "label": cases[0]["label"],
                "scan": scan,
                "slice_p": np.zeros(0) if slice_p is None else slice_p,
                "slice_labels": None if labels is None else np.asarray(labels),
            }
        )
    return rows


def run_subtypes(record_path: Path | None = None, data_dir: Path | None = None) -> dict:
    """`ml.subtypes.analyse` of a CT-ICH CV record: by default the shipped recipe's (as the report's CV rows)."""
    from ml import subtypes
    from ml.report import shipped_recipe_cv

    if record_path is None:
        record = shipped_recipe_cv("ct_ich", _default_card())
        if record is None:
            raise SystemExit("no CT-ICH CV record of the shipped recipe in bench/results: name one")
        name = record["_name"]
    else:
        record, name = json.loads(record_path.read_text()), record_path.stem
    root = mldata.dataset_roots("ct_ich", data_dir or paths.data_dir(required=True))["ct_ich"]
    result = subtypes.analyse(record, mldata.read_ct_ich(root), subtypes.read_types(root))
    return {"record": name, **result}


# scikit-image's bundled sample pictures (no download): photographs, micrographs, text, textures, logos.
PICTURES = (
    "astronaut", "brick", "camera", "cat", "cell", "checkerboard", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "text",
)  # fmt: skip


def _pictures() -> dict[str, tuple[np.ndarray, float]]:
    """Inputs that are not head CT, as greyscale slices with their colour fraction: scikit-image's sample pictures,
    its Shepp-Logan head phantom, and noise, a blank frame and a ramp."""
    import io

    import skimage.data
    from PIL import Image

    out = {}
    for name in PICTURES:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="PNG")
        out[name] = preprocess.read_slice(buffer)  # as an upload of the picture would be read
    out["shepp_logan_phantom"] = ((skimage.data.shepp_logan_phantom() * 255).astype(np.uint8), 0.0)
    rng = np.random.default_rng(SEED)
    out["noise"] = (rng.integers(0, 256, (256, 256), dtype=np.uint8), 0.0)
    out["blank"] = (np.zeros((256, 256), np.uint8), 0.0)
    out["ramp"] = (np.tile(np.arange(256, dtype=np.uint8), (256, 1)), 0.0)
    return out


def _held_out_pictures() -> dict[str, tuple[np.ndarray, float]]:
    """Pictures never looked at while the input check's thresholds were set: matplotlib's bundled sample data (a
    photo, a product photo, a logo, a head MRI slice, two elevation maps) and a line chart drawn with it."""
    import gzip
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    folder = Path(matplotlib.get_data_path()) / "sample_data"

    def grey(values: np.ndarray) -> io.BytesIO:
        values = values.astype(np.float64)
        u8 = ((values - values.min()) / (values.max() - values.min()) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(u8).save(buffer, format="PNG")
        return buffer

    with gzip.open(folder / "s1045.ima.gz") as handle:
        mri = np.frombuffer(handle.read(), np.uint16).reshape(256, 256)
    sources = {
        "photo (grace_hopper.jpg)": folder / "grace_hopper.jpg",
        "product photo (Minduka_Present_Blue_Pack.png)": folder / "Minduka_Present_Blue_Pack.png",
        "logo (logo2.png)": folder / "logo2.png",
        "head MRI slice (s1045.ima)": grey(mri),
        "elevation map (topobathy)": grey(np.load(folder / "topobathy.npz")["topo"]),
        "elevation map (jacksboro_fault_dem)": grey(np.load(folder / "jacksboro_fault_dem.npz")["elevation"]),
    }
    figure, axes = plt.subplots(figsize=(5, 4), dpi=100)
    axes.plot(np.random.default_rng(SEED).normal(size=100).cumsum())
    chart = io.BytesIO()
    figure.savefig(chart, format="png")
    plt.close(figure)
    sources["line chart (matplotlib)"] = chart
    return {name: preprocess.read_slice(source) for name, source in sources.items()}


# Display windows a picture may have been exported with, all inside the CT-ICH JPGs' 40/120 (-20..100 HU), so they can
# be made exactly from those JPGs. DICOM uploads never meet this: the platform windows their HU itself.
EXPORT_WINDOWS = {
    "40/120 (the model's)": (40, 120),
    "brain 40/80": (40, 80),
    "35/60": (35, 60),
    "stroke 40/40": (40, 40),
}


def rewindow(u8: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """A slice in the model window (40/120) as it would look exported in another window inside that one."""
    centre, width = preprocess.MODEL_WINDOW
    hu = u8.astype(np.float32) * (width / 255.0) + (centre - width / 2)
    return preprocess.apply_window(hu, *window)


def run_windows(
    data_dir: Path | None = None,
    windows: dict[str, tuple[float, float]] | None = None,
    *,
    checkpoint: Path | None = None,
    split: str = "test",
) -> dict:
    """How a model's scores move when a picture comes in another display window: the CT-ICH patients of one split of
    its card (the shipped model's test patients by default; split="val" for choosing between models), each slice
    re-windowed exactly from the released 40/120 JPG, scored as a series; AUCs and sensitivity/specificity at the
    card's thresholds (slice and series)."""
    from ml.predict import Predictor

    card_path = (checkpoint or paths.default_checkpoint_dir()) / "metadata.json"
    if not card_path.is_file():
        raise SystemExit(f"no model card at {card_path}")
    card = json.loads(card_path.read_text())
    root = mldata.dataset_roots("ct_ich", data_dir or paths.data_dir(required=True))["ct_ich"]
    chosen = set(card["splits"]["ct_ich"][split])
    scans = [s for s in mldata.read_ct_ich(root) if s.scan_id in chosen]
    raw = {s.scan_id: [preprocess.load_slice(p) for p in s.slice_paths] for s in scans}
    predictor = Predictor(checkpoint)
    slice_t, series_t = float(card["slice_threshold"]), float(card["series_threshold"])
    out: dict = {"version": card["version"], "split": split, "patients": len(scans)}
    out["window_aug"] = card.get("training", {}).get("window_aug", 0.0)
    out["slices"] = sum(len(v) for v in raw.values())
    out["thresholds"] = {"slice": slice_t, "series": series_t}
    out["windows"] = {}
    for name, window in (windows or EXPORT_WINDOWS).items():
        ys, ps, yp, pp = [], [], [], []
        for scan in scans:
            result = predictor.predict_slices([rewindow(u8, window) for u8 in raw[scan.scan_id]], heatmaps=False)
            ys += list(scan.slice_labels)
            ps += result.slice_probabilities
            yp.append(scan.label)
            pp.append(result.probability)
        ys, ps, yp, pp = map(np.asarray, (ys, ps, yp, pp))
        out["windows"][name] = {
            "slice_auc": metrics.auc(ys, ps),
            "slice_sensitivity": float((ps[ys == 1] >= slice_t).mean()),
            "slice_specificity": float((ps[ys == 0] < slice_t).mean()),
            "patient_auc": metrics.auc(yp, pp),
            "patients_found": int((pp[yp == 1] >= series_t).sum()),
            "patients_positive": int((yp == 1).sum()),
            "patients_cleared": int((pp[yp == 0] < series_t).sum()),
            "patients_negative": int((yp == 0).sum()),
        }
    return out


DENSITY_FACTORS = (5, 8)  # 1 mm and 0.625 mm from CT-ICH's 5 mm


def densify(slices: Sequence[np.ndarray], factor: int) -> list[np.ndarray]:
    """A series made ``factor`` times denser: ``factor - 1`` slices linearly interpolated between each neighbouring
    pair (same shape required), the originals at every ``factor``-th place."""
    out = []
    for a, b in zip(slices[:-1], slices[1:], strict=True):
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        out += [np.rint(a32 + (b32 - a32) * (k / factor)).astype(np.uint8) for k in range(factor)]
    return out + [slices[-1]]


# What a windowed picture's clipped greys stand for when HU are restored (`restore_hu`): air and bone.
RESTORED_AIR_HU, RESTORED_BONE_HU = -1000.0, 1000.0


def restore_hu(u8: np.ndarray, window: tuple[float, float] = preprocess.MODEL_WINDOW) -> np.ndarray:
    """HU from a slice windowed at ``window`` (float32): the greys inside the window mapped back linearly, 0 taken
    as air and 255 as bone (``RESTORED_*_HU``), so that averaging slices mixes bone with brain as a scanner does
    (white), not as two greys do (a blood-like grey)."""
    center, width = window
    hu = np.float32(center - width / 2.0) + u8.astype(np.float32) * np.float32(width / 255.0)
    hu[u8 == 0] = RESTORED_AIR_HU
    hu[u8 == 255] = RESTORED_BONE_HU
    return hu


def densify_hu(slices: Sequence[np.ndarray], factor: int) -> list[np.ndarray]:
    """`densify` in HU restored from the window (`restore_hu`), then windowed again: the interpolated slices mix bone
    with brain as a scanner's thin reconstruction would."""
    restored = [restore_hu(u8) for u8 in slices]
    out = []
    for a, b in zip(restored[:-1], restored[1:], strict=True):
        out += [
            preprocess.apply_window(a + (b - a) * np.float32(k / factor), *preprocess.MODEL_WINDOW)
            for k in range(factor)
        ]
    return out + [slices[-1]]


def _hu_averaged(hus: Sequence[np.ndarray]) -> np.ndarray:
    """Slices in HU averaged into one, then windowed: as a scanner's thick reconstruction."""
    from ml import slabs

    return preprocess.apply_window(slabs.mean_image(hus), *preprocess.MODEL_WINDOW)


def _grey_averaged(slices: Sequence[np.ndarray]) -> np.ndarray:
    """Windowed slices averaged as greys (what the JPGs allow without `restore_hu`; bone beside brain turns grey)."""
    from ml import slabs

    return np.rint(slabs.mean_image(slices)).astype(np.uint8)


def _density_real_hu(predictor, data_dir: Path) -> dict:
    """The GE series (real HU, one head, no labels): neighbouring pairs averaged in HU (as a scanner would), in the
    window (as the JPG simulations do) and in HU restored from the window (`restore_hu`), each scored as a series."""
    folder = data_dir / "dicom" / "ge_head_series"
    datasets = dcm.read_series(sorted(folder.glob("*.dcm")))
    hus = [dcm.to_hu(ds) for ds in datasets]
    windowed = [preprocess.apply_window(hu, *preprocess.MODEL_WINDOW) for hu in hus]
    pairs = list(zip(range(0, len(hus) - 1, 2), range(1, len(hus), 2), strict=True))
    series = {
        "as stored, slice by slice": windowed,
        "pairs averaged in HU": [_hu_averaged([hus[a], hus[b]]) for a, b in pairs],
        "pairs averaged in the window": [_grey_averaged([windowed[a], windowed[b]]) for a, b in pairs],
        "pairs averaged in restored HU": [
            _hu_averaged([restore_hu(windowed[a]), restore_hu(windowed[b])]) for a, b in pairs
        ],
    }
    out = {"series": folder.name, "slices": len(hus), "pairs": len(pairs)}
    for name, slices in series.items():
        result = predictor.predict_slices(slices, heatmaps=False)
        out[name] = {
            "probability": round(result.probability, 4),
            "mean_slice_probability": round(float(np.mean(result.slice_probabilities)), 4),
            "max_slice_probability": round(float(np.max(result.slice_probabilities)), 4),
        }
    return out


def run_density(data_dir: Path | None = None, factors: Sequence[int] = DENSITY_FACTORS) -> dict:
    """Does the shipped model's answer depend on how thin the slices are? The CT-ICH patients held out from its
    training (validation and test splits of its card), each 5 mm series also scored made ``factor`` times denser,
    read slice by slice and read as 5 mm slabs (`ml.slabs`, the mean of the windowed slices here, as the JPGs hold no
    HU). There is no real thin-slice series with labels here, so density is simulated two ways, each flawed:
    interpolated (`densify`: blends of two slices 5 mm apart, so its slabs are blurred over about 10 mm, with a
    doubled skull edge) and each slice repeated (isolates the longer sequence; its slabs are the originals
    exactly). Thicker slices: neighbouring pairs of 5 mm slices averaged into 10 mm ones (slice AUC then gives each
    original slice its pair's probability). Each blend is made twice: of the windowed greys (which turns bone beside
    brain into a blood-like grey) and in HU restored from the window (`restore_hu`), as a scanner would; the GE
    series checks the restoration against real HU (`_density_real_hu`). Slice AUC is read at the original slices;
    labels at the card's series threshold are compared with the original series' labels."""
    from ml import slabs
    from ml.predict import Predictor

    predictor = Predictor()
    card = predictor.metadata
    root = mldata.dataset_roots("ct_ich", data_dir or paths.data_dir(required=True))["ct_ich"]
    chosen = set(card["splits"]["ct_ich"]["val"]) | set(card["splits"]["ct_ich"]["test"])
    scans = [s for s in mldata.read_ct_ich(root) if s.scan_id in chosen]
    series_t = float(card["series_threshold"])
    slab_mm = slabs.SLAB_MM
    readings: dict[str, dict[str, list]] = {}

    def add(name: str, scan, probability: float, slice_probabilities: list[float]) -> None:
        row = readings.setdefault(name, {"ids": [], "y": [], "p": [], "ys": [], "ps": []})
        row["ids"].append(scan.scan_id)
        row["y"].append(scan.label)
        row["p"].append(probability)
        row["ys"] += list(scan.slice_labels)
        row["ps"] += list(slice_probabilities)

    slab_plans: dict[int, dict] = {}
    for scan in scans:
        original = [preprocess.load_slice(p) for p in scan.slice_paths]
        result = predictor.predict_slices(original, heatmaps=False)
        add("5 mm, as released", scan, result.probability, result.slice_probabilities)
        # Thicker slices: each pair of neighbouring 5 mm slices averaged into one of 10 mm, as greys and in HU
        # restored from the window (`restore_hu`), as a scanner averages: bone with brain is white.
        restored = [restore_hu(u8) for u8 in original]
        pairs = list(zip(range(0, len(original) - 1, 2), range(1, len(original), 2), strict=True))
        for name, thick in (
            ("10 mm (5 mm pairs averaged)", [_grey_averaged([original[a], original[b]]) for a, b in pairs]),
            ("10 mm (5 mm pairs averaged in HU)", [_hu_averaged([restored[a], restored[b]]) for a, b in pairs]),
        ):
            result = predictor.predict_slices(thick, heatmaps=False)
            pairs_p = [p for p in result.slice_probabilities for _ in range(2)]
            pairs_p += pairs_p[-1:] * (len(original) - len(pairs_p))  # an odd last slice takes the last pair's
            add(name, scan, result.probability, pairs_p)
        for factor in factors:
            for simulation, dense in (
                ("interpolated", densify(original, factor)),
                ("interpolated in HU", densify_hu(original, factor)),
                ("each slice repeated", [u8 for u8 in original for _ in range(factor)]),
            ):
                name = f"{slab_mm / factor:g} mm ({simulation})"
                result = predictor.predict_slices(dense, heatmaps=False)
                add(f"{name}, slice by slice", scan, result.probability, result.slice_probabilities[::factor])
                plan = slabs.plan([i * slab_mm / factor for i in range(len(dense))], slab_mm=slab_mm)
                if plan is None:
                    raise RuntimeError(f"no slab plan for {factor} times denser slices")
                slab_plans[factor] = plan.to_dict()
                if simulation == "interpolated in HU":  # slabs in HU, as `ml.preprocess.series_slices` makes them
                    hus = [restore_hu(u8) for u8 in dense]
                    thick = [_hu_averaged([hus[i] for i in g]) for g in plan.groups]
                else:
                    thick = [_grey_averaged([dense[i] for i in g]) for g in plan.groups]
                result = predictor.predict_slices(thick, heatmaps=False)
                add(
                    f"{name}, read as {slab_mm:g} mm slabs",
                    scan,
                    result.probability,
                    plan.expand(result.slice_probabilities)[::factor],
                )
    base = readings["5 mm, as released"]
    base_labels = np.asarray(base["p"]) >= series_t
    out: dict = {
        "version": card["version"],
        "patients": len(scans),
        "split": "val + test of the card",
        "series_threshold": series_t,
        "slab_mm": slab_mm,
        "slab_plans": {str(k): v for k, v in slab_plans.items()},
        "restored_hu": {"air": RESTORED_AIR_HU, "bone": RESTORED_BONE_HU},
        "real_hu_check": _density_real_hu(predictor, data_dir or paths.data_dir(required=True)),
        "readings": {},
    }
    for name, row in readings.items():
        y, p = np.asarray(row["y"]), np.asarray(row["p"])
        out["readings"][name] = {
            "patient_auc": metrics.auc(y, p),
            "slice_auc": metrics.auc(np.asarray(row["ys"]), np.asarray(row["ps"])),
            "patients_found": int((p[y == 1] >= series_t).sum()),
            "patients_positive": int((y == 1).sum()),
            "patients_cleared": int((p[y == 0] < series_t).sum()),
            "patients_negative": int((y == 0).sum()),
            "labels_changed": int(((p >= series_t) != base_labels).sum()),
            "mean_probability_change": float(np.mean(p - np.asarray(base["p"]))),
            "probabilities": dict(zip(row["ids"], (round(float(v), 4) for v in p), strict=True)),
        }
    return out


def _inputcheck_exports(hus: list[np.ndarray]) -> dict[str, dict[str, int]]:
    """Verdicts on real CT slices (in HU) exported other ways than the model's window: other display windows, the
    model window picture inverted, turned, cropped tight, resized, JPEG-compressed, noisy or with burnt-in text, and
    the HU stored in a 16-bit PNG as `ml.preprocess` reads it."""
    import io

    from PIL import Image, ImageDraw

    from ml import inputcheck

    def jpeg(u8: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(u8).save(buffer, format="JPEG", quality=30)
        return np.asarray(Image.open(buffer))

    def stored_16_bit(hu: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.clip(hu + 1024, 0, 65535).astype(np.uint16)).save(buffer, format="PNG")
        return preprocess.load_slice(buffer)

    def text(u8: np.ndarray) -> np.ndarray:
        image = Image.fromarray(u8.copy())
        draw = ImageDraw.Draw(image)
        for y in range(0, u8.shape[0], 40):
            draw.text((5, y), "L  W:120 C:40  Se:2 Im:14", fill=255)
        return np.asarray(image)

    rng = np.random.default_rng(SEED)
    windows = {
        "brain 40/80": (40, 80),
        "stroke 40/40": (40, 40),
        "subdural 80/200": (80, 200),
        "wide 50/350": (50, 350),
    }
    windows |= {"bone 500/2000": (500, 2000), "bone 600/2800": preprocess.BONE_WINDOW}
    changes = {
        "model window 40/120, as is": lambda u: u,
        "turned 90 degrees": np.rot90,
        "resized to 128 px": lambda u: np.asarray(Image.fromarray(u).resize((128, 128), Image.BILINEAR)),
        "resized to 1024 px": lambda u: np.asarray(Image.fromarray(u).resize((1024, 1024), Image.BILINEAR)),
        "JPEG quality 30": jpeg,
        "noise (sd 10 grey levels)": lambda u: np.clip(u + rng.normal(0, 10, u.shape), 0, 255).astype(np.uint8),
        "burnt-in text": text,
        "cropped to the middle half (no air)": lambda u: u[
            u.shape[0] // 4 : -u.shape[0] // 4, u.shape[1] // 4 : -u.shape[1] // 4
        ],
        "inverted (white air)": lambda u: 255 - u,
    }
    variants = {f"window {name}": (lambda hu, w=w: preprocess.apply_window(hu, *w)) for name, w in windows.items()}
    variants |= {
        name: (lambda hu, f=f: f(preprocess.apply_window(hu, *preprocess.MODEL_WINDOW))) for name, f in changes.items()
    }
    variants["16-bit PNG of HU + 1024, as read"] = stored_16_bit
    out = {}
    for name, make in variants.items():
        checks = [inputcheck.check_slice(make(hu)) for hu in hus]
        out[name] = {
            "ok": sum(not c.unusual for c in checks),
            "warn": sum(c.unusual and not c.not_head_ct for c in checks),
            "refuse": sum(c.not_head_ct for c in checks),
        }
    return out


def run_inputcheck(data_dir: Path | None = None) -> dict:
    """How `ml.inputcheck` judges every real slice and series in the data folder (each slice also as a single
    image), CT-ICH's bone-window series and hemorrhage masks, and pictures that are not CT; and what the shipped
    model says of those pictures (why the check exists)."""
    from collections import Counter

    from ml import inputcheck
    from ml.predict import Predictor

    root = data_dir or paths.data_dir(required=True)
    groups: dict[str, list[tuple[str, list[tuple[np.ndarray, float]]]]] = {}
    roots = mldata.dataset_roots("both", root)
    groups["Head CT images"] = [
        (s.key, [preprocess.read_slice(s.slice_paths[0])]) for s in mldata.read_head_ct(roots["head_ct"])
    ]
    ich = mldata.read_ct_ich(roots["ct_ich"])
    series = {s.key: [preprocess.read_slice(p) for p in s.slice_paths] for s in ich}
    groups["CT-ICH series (brain window)"] = list(series.items())
    groups["CT-ICH slices, each alone"] = [(f"{k}/{i}", [sl]) for k, v in series.items() for i, sl in enumerate(v)]
    bone = [(s.key, [p.parent.parent / "bone" / p.name for p in s.slice_paths]) for s in ich]
    groups["CT-ICH series in the bone window"] = [(k, [preprocess.read_slice(p) for p in ps]) for k, ps in bone]
    masks = sorted((roots["ct_ich"] / "Patients_CT").glob("*/brain/*_HGE_Seg.jpg"))
    groups["CT-ICH hemorrhage masks, each alone"] = [
        (str(p.relative_to(root)), [preprocess.read_slice(p)]) for p in masks
    ]
    dicom = root / "dicom"
    files = sorted(p for p in dicom.rglob("*.dcm") if p.parent.name != "masks")
    groups["DICOM files in dicom/, each alone"] = [
        (str(p.relative_to(dicom)), [preprocess.read_slice(p)]) for p in files
    ]
    ge = dicom / "ge_head_series"
    groups["DICOM series dicom/ge_head_series"] = (
        [(ge.name, [(u8, 0.0) for u8 in preprocess.load_scan(ge)[0]])] if ge.is_dir() else []
    )
    pictures = _pictures()
    groups["Pictures that are not CT"] = [(name, [picture]) for name, picture in pictures.items()]
    groups["Held out: pictures never seen while setting the thresholds"] = [
        (name, [picture]) for name, picture in _held_out_pictures().items()
    ]

    out: dict = {"version": inputcheck.VERSION, "groups": {}}
    for group, scans in groups.items():
        verdicts, failed, flagged, passed = Counter(), Counter(), {}, []
        for key, slices in scans:
            checks = [inputcheck.check_slice(u8, colour=colour) for u8, colour in slices]
            verdict = inputcheck.check_scan(checks)
            verdicts[verdict.verdict] += 1
            failed.update(verdict.failed)
            if verdict.verdict != "ok":
                flagged[key] = {"verdict": verdict.verdict, "failed": verdict.failed, "slices": verdict.slices}
            else:
                passed.append(key)
        out["groups"][group] = {
            "scans": len(scans),
            "slices": sum(len(s) for _, s in scans),
            "verdicts": {v: verdicts[v] for v in ("ok", "warn", "refuse")},
            "slices_failing": dict(failed),
            "flagged": flagged,
            **({"passed": passed} if len(scans) <= 50 else {}),
        }
    out["exports"] = _inputcheck_exports([preprocess.dicom_to_hu(p) for p in files])
    predictor = Predictor()
    out["model_on_pictures"] = {
        "version": predictor.version,
        "probabilities": {
            name: round(predictor.predict_slices([u8], heatmaps=False).probability, 3)
            for name, (u8, _) in pictures.items()
        },
        "threshold": predictor.threshold,
    }
    probe = groups["Head CT images"][0][1][0][0]
    start = time.perf_counter()
    for _ in range(20):
        inputcheck.check_slice(probe)
    out["ms_per_slice"] = round((time.perf_counter() - start) / 20 * 1000, 1)
    out["ms_per_slice_shape"] = list(probe.shape)
    return out


def run_classical(size: int = preprocess.DEFAULT_SIZE, seed: int = SEED) -> dict:
    """Classical features + SVM/k-NN/RF on the default model's split and in k-fold CV; metadata-only control."""
    from ml import baselines

    out: dict = {"seed": seed, "size": size, "split": {}, "cv": {}, "metadata_only": {}}
    card = _default_card()
    cache: dict = {}
    for layout, folds in (("head_ct", 5), ("ct_ich", 5)):
        scans, items = _items(layout, size)
        split = (card or {}).get("splits", {}).get(layout) or mldata.split_ids(scans, seed=seed)
        train_ids = split["train"] + split["val"]  # classical models have no early stopping: train on both
        res = baselines.fit_predict([items[i] for i in train_ids], [items[i] for i in split["test"]], seed, cache)
        # Threshold 0.5 for probabilities of balanced models (no validation use); AUC is threshold-free.
        out["split"][layout] = {
            name: {
                "scan": _scan_summary(list(r.values()), "max_slice", 0.5),
                **({"slice": _slice_summary(list(r.values()), 0.5)} if layout == "ct_ich" else {}),
            }
            for name, r in res.items()
        }
        fold_rows: dict[str, list] = {}
        pooled: dict[str, dict] = {}
        for tr, te in mldata.kfold_ids(scans, k=folds, seed=seed):
            res = baselines.fit_predict([items[i] for i in tr], [items[i] for i in te], seed, cache)
            for name, r in res.items():
                fold_rows.setdefault(name, []).append(
                    _scan_summary(list(r.values()), "max_slice", 0.5)
                    | {"slice_auc": (_slice_summary(list(r.values()), 0.5) or {}).get("auc")}
                )
                pooled.setdefault(name, {}).update({key: v for key, v in r.items()})
        out["cv"][layout] = {
            name: {
                "folds": folds,
                "auc": metrics.summary([f["auc"] for f in rows]),
                "accuracy": metrics.summary([f["accuracy"] for f in rows]),
                "slice_auc": metrics.summary([f["slice_auc"] for f in rows]),
                "pooled_auc": metrics.auc(
                    [v["label"] for v in pooled[name].values()], [v["scan"]["max_slice"] for v in pooled[name].values()]
                ),
            }
            for name, rows in fold_rows.items()
        }
        if layout == "head_ct":
            out["metadata_only"] = _metadata_only(scans, split, folds, seed)
    _save("classical", out)
    return out


def _metadata_only(scans, split, folds: int, seed: int) -> dict:
    """Logistic regression on raw width, height and colour mode only: how far the shortcut alone gets."""
    from ml import baselines

    by_id = {s.scan_id: s for s in scans}
    tr = split["train"] + split["val"]
    p = baselines.metadata_scores(
        [by_id[i].slice_paths[0] for i in tr],
        [by_id[i].label for i in tr],
        [by_id[i].slice_paths[0] for i in split["test"]],
        seed,
    )
    y = [by_id[i].label for i in split["test"]]
    result = {"features": "raw width, height, RGBA flag, RGB flag", "split": metrics.binary_metrics(y, p, 0.5)}
    accs, aucs = [], []
    for a, b in mldata.kfold_ids(scans, k=folds, seed=seed):
        p = baselines.metadata_scores(
            [by_id[i].slice_paths[0] for i in a],
            [by_id[i].label for i in a],
            [by_id[i].slice_paths[0] for i in b],
            seed,
        )
        m = metrics.binary_metrics([by_id[i].label for i in b], p, 0.5)
        accs.append(m["accuracy"])
        aucs.append(m["auc"])
    result["cv"] = {"folds": folds, "accuracy": metrics.summary(accs), "auc": metrics.summary(aucs)}
    return result


def run_letters(checkpoint: Path | None = None) -> dict:
    """Head CT: the shipped model's metrics with and without everything outside the head blanked in the raw image
    (burnt-in letters, rulers, borders), and how much the model input itself changes."""
    from ml.evaluate import evaluate

    checkpoint = checkpoint or paths.default_checkpoint_dir()
    out = {}
    for split in ("test", "all"):
        plain = evaluate(checkpoint, paths.data_dir(), "head_ct", split=split)
        masked = evaluate(checkpoint, paths.data_dir(), "head_ct", split=split, mask_letters=True)
        diffs = [abs(plain["scores"][k]["probability"] - masked["scores"][k]["probability"]) for k in plain["scores"]]
        out[split] = {
            "plain": plain["scan"],
            "masked": masked["scan"],
            "n_scans": plain["n_scans"],
            "max_probability_change": float(max(diffs)),
            "mean_probability_change": float(np.mean(diffs)),
        }
    scans = mldata.read_head_ct(paths.dataset_dir("head_ct"))
    changed = 0
    for s in scans:
        raw = preprocess.load_slice(s.slice_paths[0])
        a = preprocess.crop_resize(raw)
        b = preprocess.crop_resize(preprocess.mask_outside_head(raw))
        changed += int(not np.array_equal(a, b))
    out["inputs_changed_by_masking"] = {"n": len(scans), "changed": changed}
    out["version"] = json.loads((checkpoint / "metadata.json").read_text())["version"]
    _save("letters", out)
    return out


def run_dicom_check(checkpoint: Path | None = None) -> dict:
    """The same CT-ICH hemorrhage slices as raw-HU DICOM and as the released brain-window JPG: the shipped model's
    slice probabilities should agree (each slice scored alone, as a sequence of one)."""
    from ml.predict import Predictor

    predictor = Predictor(checkpoint, device="cpu")
    root = paths.dataset_dir("dicom") / "ct_ich_hu_slices" / "images"
    rows = []
    for f in sorted(root.glob("*.dcm")):
        patient, number = f.stem.split("_")
        jpg = paths.dataset_dir("ct_ich") / "Patients_CT" / patient / "brain" / f"{int(number)}.jpg"
        if not jpg.is_file():
            continue
        p_dcm = predictor.predict_sources([f], heatmaps=False).probability
        p_jpg = predictor.predict_sources([jpg], heatmaps=False).probability
        rows.append({"slice": f.stem, "p_dicom": p_dcm, "p_jpg": p_jpg})
    d = np.array([r["p_dicom"] for r in rows])
    j = np.array([r["p_jpg"] for r in rows])
    out = {
        "version": predictor.version,
        "n": len(rows),
        "threshold": predictor.threshold,
        "positive_rate_dicom": float((d >= predictor.threshold).mean()),
        "positive_rate_jpg": float((j >= predictor.threshold).mean()),
        "mean_abs_difference": float(np.abs(d - j).mean()),
        "correlation": float(np.corrcoef(d, j)[0, 1]) if len(rows) > 2 else None,
        "rows": rows,
    }
    _save("dicom_check", out)
    return out


def record_ablation(checkpoint: Path) -> dict:
    """Copy a CNN-only (or other variant) checkpoint's card metrics into the results (weights are not kept)."""
    card = json.loads((Path(checkpoint) / "metadata.json").read_text())
    rec = {
        "version": card["version"],
        "architecture": card["architecture"],
        "command": card["command"],
        "training": {k: v for k, v in card["training"].items() if k != "history"},
        "metrics": card["metrics"],
        "threshold": card["threshold"],
        "scan_pooling": card["scan_pooling"],
        "splits": card["splits"],
    }
    name = "ablation_cnn" if not card["architecture"]["recurrent"] else "ablation_" + card["architecture"]["encoder"]
    _save(name, rec)
    return rec


def _default_card() -> dict | None:
    path = paths.default_checkpoint_dir() / "metadata.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None) -> int:
    """Entry point of `python -m ml.benchmark`."""
    parser = argparse.ArgumentParser(prog="python -m ml.benchmark", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    cv = sub.add_parser("cv")
    cv.add_argument("--dataset", choices=list(mldata.LAYOUTS), required=True)
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--variant", choices=["lstmgru", "cnn"], default="lstmgru")
    cv.add_argument("--epochs", type=int, default=12)
    cv.add_argument("--max-minutes", type=float, default=None, help="per fold")
    cv.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    cv.add_argument("--smooth", type=int, default=1)
    cv.add_argument("--patience", type=int, default=4)
    cv.add_argument("--tta", choices=["none", "hflip"], default="none")
    cv.add_argument("--augment", choices=["series", "slice"], default="slice")
    cv.add_argument("--window", type=int, default=0, help="training window in slices (0: each series whole)")
    cv.add_argument("--size", type=int, default=preprocess.DEFAULT_SIZE, help="input size in pixels")
    cv.add_argument("--ema", type=float, default=0.0, help="keep a moving average of the weights (decay)")
    cv.add_argument("--min-epochs", type=int, default=1, help="the first epoch that may be kept")
    cv.add_argument("--tag", default="", help="suffix of the results file name")
    cv.add_argument("--note", default="", help="a few words for the report's row (e.g. what a rerun is for)")
    cv.add_argument("--encoder", choices=["lite0", "small"], default="lite0")
    cv.add_argument("--extra-train", choices=list(mldata.LAYOUTS), default=None, help="add this dataset to training")
    cv.add_argument("--freeze-blocks", type=int, default=3, help="frozen Lite0 blocks after the stem (as ml.train)")
    cv.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    cv.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    cv.add_argument("--seg-weight", type=float, default=0.0, help="mask supervision weight (as ml.train; 0: off)")
    cv.add_argument(
        "--window-aug", type=float, default=0.0, help="share of series in a narrower display window (as ml.train)"
    )
    cv.add_argument("--context", type=int, default=0, help="neighbouring slices per side as channels (as ml.train)")
    cv.add_argument("--bone-channel", action="store_true", help="the bone-suppressed second channel (as ml.train)")
    cv.add_argument("--only-folds", default=None, help="comma-separated fold numbers to run (others skipped)")
    cv.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="fold k trains with this + k (default: 0, the seed of the folds); folds unchanged",
    )
    merge = sub.add_parser("merge", help="join CV records of disjoint folds of one recipe")
    merge.add_argument("--out", required=True, help="name of the merged record in bench/results (no .json)")
    merge.add_argument("records", nargs="+", help="CV record files (JSON)")
    ens = sub.add_parser("ensemble", help="average the out-of-fold scores of CV records of several training seeds")
    ens.add_argument("--out", required=True, help="name of the ensemble record in bench/results (no .json)")
    ens.add_argument("records", nargs="+", help="CV record files (JSON), one per training seed")
    ens.add_argument("--note", default="", help="a few words for the report's row")
    st = sub.add_parser("subtypes", help="CT-ICH out-of-fold errors by hemorrhage type and bleed size")
    st.add_argument("record", nargs="?", help="CT-ICH CV record (default: the shipped recipe's)")
    sub.add_parser("inputcheck", help="how ml.inputcheck judges the data folder and pictures that are not CT")
    win = sub.add_parser("windows", help="the shipped model on CT-ICH test pictures exported in other display windows")
    win.add_argument("--checkpoint", type=Path, default=None, help="another model (default: the shipped one)")
    win.add_argument("--split", choices=["test", "val"], default="test", help="which of the card's CT-ICH splits")
    win.add_argument(
        "--out",
        default=None,
        help="results name under bench/results (default: windows for the shipped model's test split, else "
        "windows_SPLIT_CHECKPOINTNAME, which the report lists beside it)",
    )
    sub.add_parser("density", help="the shipped model on held-out CT-ICH series made thinner: slice by slice vs slabs")
    sub.add_parser("classical")
    sub.add_parser("letters")
    sub.add_parser("dicom")
    ab = sub.add_parser("ablation")
    ab.add_argument("checkpoint", type=Path)
    sub.add_parser("report")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    if args.cmd == "cv":
        run_cv(
            args.dataset,
            args.folds,
            variant=args.variant,
            epochs=args.epochs,
            max_minutes=args.max_minutes,
            schedule=args.schedule,
            smooth=args.smooth,
            patience=args.patience,
            tta=args.tta,
            tag=args.tag,
            note=args.note,
            encoder=args.encoder,
            extra_train=args.extra_train,
            augment=args.augment,
            window=args.window,
            ema=args.ema,
            min_epochs=args.min_epochs,
            size=args.size,
            freeze_blocks=args.freeze_blocks,
            device=args.device,
            threads=args.threads,
            train_seed=args.train_seed,
            only_folds=None if args.only_folds is None else [int(k) for k in args.only_folds.split(",")],
            seg_weight=args.seg_weight,
            context=args.context,
            window_aug=args.window_aug,
            bone_channel=args.bone_channel,
        )
    elif args.cmd == "merge":
        merged = merge_cv([json.loads(Path(f).read_text()) for f in args.records])
        print(_save(args.out, merged))
    elif args.cmd == "ensemble":
        files = [Path(f) for f in args.records]
        record = ensemble_cv([json.loads(f.read_text()) for f in files], [f.stem for f in files])
        if args.note:
            record["note"] = args.note
        print(_save(args.out, record))
    elif args.cmd == "subtypes":
        print(_save("ct_ich_subtypes", run_subtypes(Path(args.record) if args.record else None)))
    elif args.cmd == "inputcheck":
        print(_save("inputcheck", run_inputcheck()))
    elif args.cmd == "windows":
        record = run_windows(checkpoint=args.checkpoint, split=args.split)
        # "windows" is the shipped model on its test patients (the report's table); any other run gets its own name.
        default = f"windows_{args.split}_{args.checkpoint.name if args.checkpoint else 'shipped'}"
        print(_save(args.out or ("windows" if args.checkpoint is None and args.split == "test" else default), record))
    elif args.cmd == "density":
        print(_save("density", run_density()))
    elif args.cmd == "classical":
        run_classical()
    elif args.cmd == "letters":
        run_letters()
    elif args.cmd == "dicom":
        run_dicom_check()
    elif args.cmd == "ablation":
        record_ablation(args.checkpoint)
    else:
        if _load("classical") is None:
            run_classical()
        if _load("letters") is None and _default_card():
            run_letters()
        if _load("dicom_check") is None and _default_card():
            run_dicom_check()
        from ml.report import write_report

        write_report(REPORT)
        print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
