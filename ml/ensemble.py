"""Join checkpoints that differ only in their training seed into one ensemble checkpoint.

    python -m ml.ensemble --members DIR DIR [...] --out DIR [--data-dir DIR] [--tta auto|none|hflip]

The members must share the split (seed and ids), the input and the architecture: train them with the same
`ml.train` command and different `--train-seed`. Their per-slice and per-scan logits are averaged
(`ml.model.HemoEnsemble`); test-time augmentation, scan pooling and thresholds are then chosen again on the shared
validation split for the ensemble (as `ml.train` chooses them for one model), and the test split is scored once.
The output is an ordinary checkpoint folder (one `model.pt` holding every member, float16; `metadata.json` with
"architecture.members" and an "ensemble" section listing each member's version, training command and figures), so
`Predictor`, `ml.evaluate`, `ml.calibrate` and the platform load it as they load one model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from ml import paths

# Card fields every member must share for an average of their logits to be one model on one split.
SHARED_FIELDS = ("splits", "seed", "input", "architecture")
# Training settings that make the members one recipe (timings, history and outcomes may differ).
RECIPE_FIELDS = (
    "max_epochs", "optimizer", "lr", "loss", "augmentation", "frozen", "freeze_blocks", "patience", "min_epochs",
    "schedule", "augment", "window", "early_stopping", "ema_decay", "seg_weight", "window_aug",
)  # fmt: skip
# What cards written before a training setting was recorded imply for it (the defaults of the time).
TRAINING_DEFAULTS = {"ema_decay": 0.0, "seg_weight": 0.0, "window_aug": 0.0}
COMBINE = "mean of the members' per-slice and per-scan logits (for two classes, the mean of their log-odds)"


def check_members(cards: list[dict]) -> None:
    """Refuse members that are not one recipe on one split, or that repeat a training seed (the same weights)."""
    if len(cards) < 2:
        raise ValueError("an ensemble needs at least two members")
    for card in cards:
        if card["architecture"].get("members", 1) != 1:
            raise ValueError(f"{card['version']} is already an ensemble; join single models")
    first = cards[0]
    for card in cards[1:]:
        for key in SHARED_FIELDS:
            if _shared(card, key) != _shared(first, key):
                raise ValueError(f"members {first['version']} and {card['version']} differ in {key!r}")
        if _counts(card) != _counts(first):
            raise ValueError(f"members {first['version']} and {card['version']} were trained on different data")
        recipe, first_recipe = training_recipe(card), training_recipe(first)
        for key in RECIPE_FIELDS:
            if recipe[key] != first_recipe[key]:
                raise ValueError(f"members {first['version']} and {card['version']} differ in training {key!r}")
    seeds = [c.get("train_seed", c["seed"]) for c in cards]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"members repeat a training seed ({seeds}): they would be the same model")


def _shared(card: dict, key: str):
    """A shared card field; an architecture from before mask supervision existed has no mask heads."""
    if key == "architecture":
        return {"seg": False, **card["architecture"]}
    return card.get(key)


def training_recipe(card: dict) -> dict:
    """The card's training settings of RECIPE_FIELDS, with what older cards imply where they do not say (the
    stopping rule and frozen blocks from their words, as the results report reads them)."""
    from ml.report import card_stopping

    t = card["training"]
    recipe = {k: t.get(k, TRAINING_DEFAULTS.get(k)) for k in RECIPE_FIELDS}
    freeze, patience, min_epochs, max_epochs = card_stopping(card)
    recipe.update(freeze_blocks=freeze, patience=patience, min_epochs=min_epochs, max_epochs=max_epochs)
    return recipe


def _counts(card: dict) -> dict:
    """Scan and slice counts per dataset (the folder a member was read from may differ between machines)."""
    return {name: {k: v for k, v in d.items() if k != "root"} for name, d in card["data"].items()}


def member_entry(card: dict) -> dict:
    """What the ensemble card keeps of one member: identity, command, training outcome, its own figures."""
    t = card["training"]
    return {
        "version": card["version"],
        "train_seed": card.get("train_seed", card["seed"]),
        "command": card["command"],
        "epochs_run": t["epochs_run"],
        "best_epoch": t["best_epoch"],
        "train_minutes": t["train_minutes"],
        "hardware": t["hardware"],
        "history": t["history"],
        "alone": {
            "scan_pooling": card["scan_pooling"],
            "tta": card.get("tta", "none"),
            "threshold": card["threshold"],
            "metrics": card["metrics"],
        },
    }


def build(members: list[Path], *, out: Path, data_dir: Path, tta: str = "auto", argv=None) -> dict:
    """Write the ensemble of the member checkpoints to `out` (written whole, then swapped in) and return its card."""
    import torch

    from ml.calibrate import decide_on_validation, split_items
    from ml.model import HemoEnsemble, count_parameters
    from ml.train import MODEL_VERSION_PREFIX, load_model, write_checkpoint

    device = torch.device("cpu")
    loaded = [load_model(m, device) for m in members]  # read before `out` (which may be a member) is replaced
    cards = [card for _, card in loaded]
    check_members(cards)
    model = HemoEnsemble([m for m, _ in loaded]).eval()
    rule = decide_on_validation(model, split_items(cards[0], data_dir), device, tta)
    test_scores = rule.pop("_test_scores")
    first = cards[0]
    entries = [member_entry(c) for c in cards]
    now = dt.datetime.now(dt.UTC)
    training = training_recipe(first)
    training.update(
        members=[{k: e[k] for k in ("train_seed", "epochs_run", "best_epoch", "train_minutes")} for e in entries],
        epochs_run=sum(e["epochs_run"] for e in entries),
        best_epoch=[e["best_epoch"] for e in entries],
        train_minutes=round(sum(e["train_minutes"] for e in entries), 2),
        preprocess_minutes=first["training"].get("preprocess_minutes", 0.0),
        hardware=" + ".join(dict.fromkeys(e["hardware"] for e in entries)),
    )
    training["cpu_time_statement"] = (
        f"{training['train_minutes']:.1f} min of training in all ("
        + ", ".join(f"{e['train_minutes']:.1f} min for seed {e['train_seed']}" for e in entries)
        + f") on {training['hardware']}; the members train independently, so in parallel where there are cores"
    )
    card = {
        "name": f"HemoNet LSTM-GRU ensemble of {len(cards)}",
        "version": f"{MODEL_VERSION_PREFIX}-ens{len(cards)}-{now.strftime('%Y%m%d%H%M')}-s{first['seed']}",
        "created": now.isoformat(timespec="seconds"),
        "intended_use": first["intended_use"],
        "command": "python -m ml.ensemble " + " ".join(shlex.quote(a) for a in (argv or [])),
        "seed": first["seed"],
        "train_seed": [e["train_seed"] for e in entries],
        "torch_version": torch.__version__,
        "device": str(device),
        "data": first["data"],
        "splits": first["splits"],
        "split_method": first["split_method"],
        "split_groups": first.get("split_groups", {}),
        "architecture": model.config,  # the members' (mask heads off where an old card did not say) + "members"
        "parameters": count_parameters(model),
        "encoder_init": first.get("encoder_init"),
        "input": first["input"],
        "output": {
            "scan_probability": f"pooling '{rule['scan_pooling']}' of the averaged logits (chosen on validation)",
            "slice_probabilities": "softmax of the averaged per-slice logits",
        },
        **{k: rule[k] for k in ("scan_pooling", "tta", "tta_method", "threshold", "threshold_method")},
        **{k: rule[k] for k in ("slice_threshold", "series_threshold")},
        "training": training,
        "ensemble": {
            "combine": COMBINE,
            "members": entries,
            "reproduce": [e["command"] for e in entries]
            + ["python -m ml.ensemble --members MEMBER_DIR ... --out OUT_DIR (each member's --out, in this order)"],
        },
        "metrics": rule["metrics"],
    }
    histories = {f"seed {e['train_seed']}": e["history"] for e in entries}
    write_checkpoint(out, model, card, histories, test_scores, card["scan_pooling"])
    return card


def main(argv=None) -> int:
    """Entry point of `python -m ml.ensemble`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m ml.ensemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=Path, nargs="+", required=True, help="member checkpoint folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: HEMO_DATA_DIR or ../shared/data")
    parser.add_argument("--tta", choices=["auto", "none", "hflip"], default="auto")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    card = build(args.members, out=args.out, data_dir=args.data_dir or paths.data_dir(), tta=args.tta, argv=argv)
    print(json.dumps({"out": str(args.out), "version": card["version"], "test": card["metrics"]["test"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
