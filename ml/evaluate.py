"""Evaluate a checkpoint on a dataset folder.

    python -m ml.evaluate [--checkpoint DIR] --data-dir DIR --layout head_ct|ct_ich [--split all|test] --json

`--split all` (default) scores every case in the folder (for external test sets); `--split test` only the
checkpoint's own held-out test ids. Prints one JSON object with scan-level (and, for series with slice labels,
slice-level) AUC, accuracy, sensitivity, specificity and F1 at the checkpoint's threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ml import data as mldata
from ml import paths, preprocess

KEYS = ("auc", "accuracy", "sensitivity", "specificity", "f1")


def evaluate(
    checkpoint: str | Path | None,
    data_dir: str | Path,
    layout: str,
    *,
    split: str = "all",
    mask_letters: bool = False,
    device: str | None = None,
) -> dict:
    """Score a folder with a checkpoint; returns the JSON-ready result (see module docstring)."""
    import torch

    from ml.train import load_model, make_items, score_items, summarise

    checkpoint = Path(checkpoint) if checkpoint else paths.default_checkpoint_dir()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, card = load_model(checkpoint, dev)
    root = mldata.dataset_roots(layout, data_dir)[layout]
    scans = mldata.read_layout(layout, root)
    if split == "test":
        ids = set(card.get("splits", {}).get(layout, {}).get("test", []))
        if not ids:
            raise SystemExit(f"checkpoint {checkpoint} has no test ids for {layout}")
        scans = [s for s in scans if s.scan_id in ids]
        if not scans:
            raise SystemExit(f"none of the {len(ids)} {layout} test ids of checkpoint {checkpoint} is in {root}")
    transform = preprocess.mask_outside_head if mask_letters else None
    arrays = mldata.load_slices(scans, size=int(card["input"]["size"]), transform=transform)
    items = make_items(scans, arrays)
    scores = score_items(model, items, dev, tta=card.get("tta", "none"))
    pooling = card.get("scan_pooling", "mean")
    summary = summarise(
        scores,
        pooling=pooling,
        threshold=float(card["threshold"]),
        slice_threshold=card.get("slice_threshold"),
        series_threshold=card.get("series_threshold"),
    )[layout]
    result = {
        "checkpoint": str(checkpoint),
        "version": card["version"],
        "layout": layout,
        "split": split,
        "threshold": summary["scan"]["threshold"],  # the card's series threshold for a layout of series
        "scan_pooling": pooling,
        "masked_letters": mask_letters,
        "n_scans": summary["n_scans"],
        "n_slices": summary["n_slices"],
        "scan": {k: summary["scan"][k] for k in KEYS}
        | {
            "confusion": summary["scan"]["confusion"],
            "sensitivity_at_specificity_0.90": summary["scan"]["sensitivity_at_specificity_0.90"],
        },
    }
    if "slice" in summary:
        result["slice"] = {k: summary["slice"][k] for k in KEYS} | {
            "threshold": summary["slice"]["threshold"],
            "confusion": summary["slice"]["confusion"],
        }
    result["scores"] = {k: {"label": v["label"], "probability": float(v["scan"][pooling])} for k, v in scores.items()}
    return result


def main(argv=None) -> int:
    """Entry point of `python -m ml.evaluate`."""
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the dataset folder or the data root holding it (default: HEMO_DATA_DIR)",
    )
    parser.add_argument("--layout", choices=list(mldata.LAYOUTS), required=True)
    parser.add_argument("--split", choices=["all", "test"], default="all")
    parser.add_argument(
        "--mask-letters",
        action="store_true",
        help="blank everything outside the head in the raw image first (shortcut control)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    parser.add_argument("--with-scores", action="store_true", help="include per-scan probabilities")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    result = evaluate(
        args.checkpoint,
        args.data_dir or paths.data_dir(),
        args.layout,
        split=args.split,
        mask_letters=args.mask_letters,
        device=args.device,
    )
    if not args.with_scores:
        result.pop("scores")
    json.dump(result, sys.stdout, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
