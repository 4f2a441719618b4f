"""Re-choose a checkpoint's decision rule on its own validation split, without retraining.

    python -m ml.calibrate --checkpoint DIR [--data-dir DIR] [--tta auto|none|hflip] [--out DIR]

Test-time augmentation, scan pooling and threshold are chosen on the validation ids stored in the card (exactly as
`ml.train` chooses them after training); the test split is then scored once with the new rule and the card's metrics
are rewritten. The weights are copied byte for byte. The result gets a new version name, so the platform registers it
as a new model (its identity covers weights and card).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from ml import data as mldata
from ml import paths


def split_items(card: dict, data_dir: Path) -> dict[str, list]:
    """The validation and test items of a card's split ids ({"val": [...], "test": [...]}), read from data_dir."""
    from ml.train import make_items

    parts: dict[str, list] = {"val": [], "test": []}
    for layout, split in card["splits"].items():
        scans = mldata.read_layout(layout, mldata.dataset_roots(layout, data_dir)[layout])
        arrays = mldata.load_slices(scans, size=int(card["input"]["size"]))
        items = {it.key: it for it in make_items(scans, arrays)}
        for part, bucket in parts.items():
            bucket += [items[f"{layout}/{i}"] for i in split[part]]
    return parts


def decide_on_validation(model, parts: dict[str, list], device, tta: str = "auto") -> dict:
    """The decision rule of a trained model, chosen on its validation items exactly as `ml.train` chooses it after
    training (test-time augmentation, scan pooling, thresholds), and the test items scored once with it. Returns the
    card fields it sets: tta, tta_method, scan_pooling, thresholds, threshold_method, metrics; and "_test_scores"."""
    from ml.train import (
        THRESHOLD_METHOD,
        choose_pooling_and_threshold,
        choose_series_threshold,
        choose_tta,
        score_items,
        summarise,
    )

    chosen, val_scores = choose_tta(model, parts["val"], device, tta)
    pooling, threshold, slice_threshold = choose_pooling_and_threshold(val_scores)
    series_threshold = choose_series_threshold(val_scores, pooling)
    decision = {"threshold": threshold, "slice_threshold": slice_threshold, "series_threshold": series_threshold}
    test_scores = score_items(model, parts["test"], device, tta=chosen)
    return {
        "tta": chosen,
        "tta_method": "chosen on validation (validation score with and without flip averaging)"
        if tta == "auto"
        else "fixed by the command",
        "scan_pooling": pooling,
        "threshold_method": THRESHOLD_METHOD,
        **decision,
        "metrics": {
            "validation": summarise(val_scores, pooling=pooling, **decision),
            "test": summarise(test_scores, pooling=pooling, **decision),
        },
        "_test_scores": test_scores,
    }


def calibrate(checkpoint: Path, *, data_dir: Path, tta: str = "auto", out: Path | None = None, argv=None) -> dict:
    """Write the recalibrated checkpoint to `out` (default: in place) and return its card."""
    import torch

    from ml.train import load_model, write_checkpoint

    checkpoint = Path(checkpoint)
    device = torch.device("cpu")
    model, card = load_model(checkpoint, device)
    rule = decide_on_validation(model, split_items(card, data_dir), device, tta)
    test_scores = rule.pop("_test_scores")
    keys = ("version", "tta", "scan_pooling", "threshold", "slice_threshold", "series_threshold")
    previous = {k: card.get(k) for k in keys}
    previous["test_metrics"] = card["metrics"]["test"]
    base = card.get("calibration", {}).get("from_version") or card["version"]
    card.update(
        version=f"{base}-{'flip' if rule['tta'] == 'hflip' else 'plain'}",
        **rule,
        calibration={
            "command": "python -m ml.calibrate " + " ".join(shlex.quote(a) for a in (argv or [])),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "from_version": base,
            "previous": previous,
            "note": "weights unchanged; test-time augmentation, pooling and thresholds re-chosen on validation only",
        },
    )
    card["output"]["scan_probability"] = f"pooling '{card['scan_pooling']}' (chosen on validation)"
    write_checkpoint(
        Path(out) if out else checkpoint, None, card, None, test_scores, card["scan_pooling"], copy_from=checkpoint
    )
    return card


def main(argv=None) -> int:
    """Entry point of `python -m ml.calibrate`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m ml.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: HEMO_DATA_DIR or ../shared/data")
    parser.add_argument("--tta", choices=["auto", "none", "hflip"], default="auto")
    parser.add_argument("--out", type=Path, default=None, help="default: rewrite the checkpoint in place")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    card = calibrate(
        args.checkpoint or paths.default_checkpoint_dir(),
        data_dir=args.data_dir or paths.data_dir(),
        tta=args.tta,
        out=args.out,
        argv=argv,
    )
    print(json.dumps({k: card[k] for k in ("version", "tta", "threshold", "series_threshold")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
