"""A seconds-long CPU training run on tiny synthetic data in both layouts: checkpoint + card, Predictor loads it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml import calibrate, evaluate
from ml import train as mltrain
from ml.predict import Predictor, ScanResult, overlay_heatmap
from tests.ml.conftest import phantom_slice as _slice


def test_training_smoke_run_writes_a_loadable_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "model"
    argv = [
        "--dataset",
        "both",
        "--data-dir",
        str(synthetic_root),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--encoder",
        "small",
        "--no-pretrained",
        "--size",
        "48",
        "--seed",
        "3",
        "--no-progress",
        "--schedule",
        "cosine",
        "--smooth",
        "2",
    ]
    assert mltrain.main(argv) == 0
    for name in ("model.pt", "metadata.json", "curves.png", "roc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["seed"] == 3 and card["command"].startswith("python -m ml.train --dataset both")
    assert set(card["splits"]) == {"head_ct", "ct_ich"}
    for split in card["splits"].values():
        ids = split["train"] + split["val"] + split["test"]
        assert len(ids) == len(set(ids)), "a patient must sit in exactly one split"
    assert 0.0 < card["threshold"] < 1.0
    assert card["metrics"]["test"]["ct_ich"]["n_slices"] > 0
    assert card["torch_version"] and card["input"]["size"] == 48
    assert card["tta"] in {"none", "hflip"} and card["training"]["schedule"] == "cosine"
    assert card["training"]["best_epoch"] == 2, "--smooth 2: epoch 1 alone is never a full trailing window"
    # A random-init encoder has nothing frozen; the stopping rule is on the card in numbers, not only in words.
    assert card["training"]["frozen"].startswith("none") and card["training"]["freeze_blocks"] == 0
    assert (card["training"]["patience"], card["training"]["min_epochs"], card["training"]["max_epochs"]) == (4, 1, 2)
    lrs = [row["lr_factor"] for row in card["training"]["history"]]
    assert lrs == sorted(lrs, reverse=True) or lrs[0] < lrs[1], "cosine: warm-up, then a falling learning rate"

    predictor = Predictor(out, device="cpu")
    assert predictor.version == card["version"] and predictor.threshold == card["threshold"]
    folder = synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain"
    result = predictor.predict_sources([folder / f"{s}.jpg" for s in range(1, 5)])
    assert isinstance(result, ScanResult)
    assert len(result.slice_probabilities) == 4 and 0 <= result.probability <= 1
    assert result.label == (result.probability >= result.threshold)
    assert len(result.heatmaps) == 4 and result.heatmaps[0].shape == result.images[0].shape == (48, 48)
    assert all(h.dtype == np.float32 and h.min() >= 0 and h.max() <= 1 for h in result.heatmaps)
    assert set(result.timings) == {"load", "inference", "heatmap"}
    assert overlay_heatmap(result.images[1], result.heatmaps[1]).mode == "RGB"
    single = predictor.predict_slices([_slice(True, 99)], heatmaps=False)
    assert len(single.slice_probabilities) == 1 and single.heatmaps == []
    # The validation split holds a bleeding and a clean series: series get their own threshold, images the scan one.
    assert card["series_threshold"] is not None and predictor.series_threshold == card["series_threshold"]
    assert result.threshold == card["series_threshold"] and single.threshold == card["threshold"]

    report = evaluate.evaluate(out, synthetic_root, "ct_ich", split="test")
    assert report["n_scans"] == len(card["splits"]["ct_ich"]["test"])
    assert report["scan"]["accuracy"] == pytest.approx(card["metrics"]["test"]["ct_ich"]["scan"]["accuracy"])
    assert report["threshold"] == card["series_threshold"] == card["metrics"]["test"]["ct_ich"]["scan"]["threshold"]

    # Recalibration: same weights, decision rule re-chosen on validation, a new version, and a card that evaluate
    # and the Predictor both follow.
    recal = tmp_path / "recalibrated"
    assert (
        calibrate.main(
            ["--checkpoint", str(out), "--data-dir", str(synthetic_root), "--tta", "hflip", "--out", str(recal)]
        )
        == 0
    )
    card2 = json.loads((recal / "metadata.json").read_text())
    assert (recal / "model.pt").read_bytes() == (out / "model.pt").read_bytes()
    assert card2["tta"] == "hflip" and card2["version"] != card["version"]
    assert card2["calibration"]["from_version"] == card["version"] and card2["splits"] == card["splits"]
    assert Predictor(recal, device="cpu").tta == "hflip"
    report2 = evaluate.evaluate(recal, synthetic_root, "ct_ich", split="test")
    assert report2["scan"]["accuracy"] == pytest.approx(card2["metrics"]["test"]["ct_ich"]["scan"]["accuracy"])
    assert report2["slice"]["auc"] == pytest.approx(card2["metrics"]["test"]["ct_ich"]["slice"]["auc"])


def test_series_threshold_is_chosen_on_validation_series_alone():
    def row(label, p, n):
        return {"label": label, "slice_p": np.full(n, p), "scan": {"head": p}}

    images = {f"i{k}": row(k % 2, 0.8 if k % 2 else 0.6, 1) for k in range(8)}  # images separate at 0.6-0.8
    series = {"s0": row(1, 0.3, 30), "s1": row(0, 0.1, 30), "s2": row(1, 0.25, 20)}  # series at 0.1-0.3
    assert mltrain.choose_series_threshold(images, "head") is None, "no validation series: the scan threshold rules"
    # Between the clean series (0.1) and the lowest bleeding one (0.25), in log-odds: 1 / (1 + sqrt(9 * 3)) = 0.161.
    assert mltrain.choose_series_threshold({**images, **series}, "head") == pytest.approx(1 / (1 + 27**0.5))
    summary = mltrain.summarise(
        {
            **{f"head_ct/{k}": v | {"dataset": "head_ct", "slice_labels": None} for k, v in images.items()},
            **{f"ct_ich/{k}": v | {"dataset": "ct_ich", "slice_labels": None} for k, v in series.items()},
        },
        pooling="head",
        threshold=0.7,
        series_threshold=0.25,
    )
    assert summary["head_ct"]["scan"]["threshold"] == 0.7 and summary["head_ct"]["scan"]["accuracy"] == 1.0
    assert summary["ct_ich"]["scan"]["threshold"] == 0.25 and summary["ct_ich"]["scan"]["accuracy"] == 1.0


def test_training_windows_cover_series_whole_or_in_windows():
    """window=16 cuts each series into two 16-slice windows (one of them around a bleeding slice); window=0 feeds
    each series whole, once per epoch, as inference sees it. Single images are batched apart from series."""
    import random

    series = [
        mltrain.Item(f"s{i}", "ct_ich", int(i == 0), np.zeros((30 + i, 8, 8), np.uint8), np.zeros(30 + i, np.int64))
        for i in range(3)
    ]
    series[0].slice_labels[27] = 1
    images = [mltrain.Item(f"i{i}", "head_ct", i % 2, np.zeros((1, 8, 8), np.uint8), None) for i in range(5)]
    windowed = mltrain.training_batches(series + images, random.Random(0), window=16, series_batch=2, image_batch=4)
    cuts = [w for b in windowed for w in b if len(w[0].slices) > 1]
    assert len(cuts) == 6 and all(b - a == 16 for _, a, b in cuts)
    assert any(it.key == "s0" and a <= 27 < b for it, a, b in cuts), "one window holds the bleeding slice"
    whole = mltrain.training_batches(series + images, random.Random(0), window=0, series_batch=2, image_batch=4)
    cuts = sorted((it.key, a, b) for batch in whole for it, a, b in batch if len(it.slices) > 1)
    assert cuts == [("s0", 0, 30), ("s1", 0, 31), ("s2", 0, 32)]
    singles = [batch for batch in whole if len(batch[0][0].slices) == 1]
    assert sorted(len(b) for b in singles) == [1, 4]
    assert all(len(it.slices) == 1 for b in singles for it, _, _ in b), "images and series never share a batch"


def test_weight_average_follows_the_weights_with_a_warm_up_and_copies_integer_buffers():
    import torch

    from ml.model import HemoNet

    model = HemoNet(encoder="small", recurrent=True, embed=8, hidden=4, dropout=0.0, pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    averaged = mltrain.EmaWeights(model, decay=0.99)
    name = next(n for n, _ in model.named_parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    counters = {k: v for k, v in model.state_dict().items() if not v.is_floating_point()}
    assert counters, "the small encoder has batch norm, so integer buffers (num_batches_tracked)"
    for v in counters.values():
        v.fill_(7)
    averaged.update(model)  # warm-up decay min(0.99, 2 / 11)
    assert torch.allclose(averaged.state[name], torch.full_like(averaged.state[name], 1 - 2 / 11))
    averaged.update(model)  # then 3 / 12
    expected = 0.25 * (1 - 2 / 11) + 0.75
    assert torch.allclose(averaged.state[name], torch.full_like(averaged.state[name], expected))
    assert all(int(averaged.state[k].flatten()[0]) == 7 for k in counters)
    copy_ = averaged.model(model)
    assert copy_ is not model and not copy_.training
    assert torch.allclose(dict(copy_.named_parameters())[name], torch.full_like(averaged.state[name], expected))
    assert torch.all(dict(model.named_parameters())[name] == 1.0), "the trained model's own weights are untouched"


def test_fit_keeps_no_epoch_before_min_epochs():
    """With min_epochs=3 of 3, the kept checkpoint is the last epoch's, whatever validation says of the first two;
    with the moving average on, the returned weights are the average, not the last step's."""
    import torch

    rng = np.random.default_rng(0)
    items = [
        mltrain.Item(f"i{i}", "head_ct", i % 2, rng.integers(0, 255, (1, 24, 24), dtype=np.uint8), None)
        for i in range(8)
    ]
    config = {"encoder": "small", "recurrent": True, "embed": 8, "hidden": 4, "dropout": 0.0, "pretrained": False}
    kwargs = dict(model_config=config, epochs=3, seed=0, device=torch.device("cpu"), progress=False, log=lambda s: None)
    model, history, best = mltrain.fit(items[:6], items[6:], min_epochs=3, ema=0.9, **kwargs)
    assert best == 3 and len(history) == 3
    raw, _, _ = mltrain.fit(items[:6], items[6:], min_epochs=3, **kwargs)
    first = next(iter(model.state_dict()))
    assert not torch.equal(model.state_dict()[first], raw.state_dict()[first]), "the average is what is kept"


def _tiny_checkpoint(folder, *, recurrent=True, size=32):
    import torch

    from ml.model import HemoNet

    torch.manual_seed(0)
    config = {"encoder": "small", "recurrent": recurrent, "in_channels": 1, "embed": 16, "hidden": 8, "dropout": 0.0}
    folder.mkdir()
    mltrain.save_state_dict(HemoNet(**config, pretrained=False), folder / "model.pt")
    card = {"architecture": config, "version": "tiny", "threshold": 0.5, "input": {"size": size}}
    (folder / "metadata.json").write_text(json.dumps(card))
    return folder


def _reference_gradcam(model, x, own_logit: bool):
    """Grad-CAM by brute force: one backward pass per slice through the whole feature map (own_logit) or the
    gradient of the sum of every slice's logit (the rule before the fifth session)."""
    import torch
    import torch.nn.functional as F

    t = x.shape[1]
    lengths = torch.tensor([t])
    with torch.no_grad():
        fmap = model.encoder(x.reshape(t, *x.shape[2:]))
    cams = []
    for i in range(t) if own_logit else [None]:
        feats = fmap.clone().requires_grad_(True)
        logits = model.forward_features(feats, 1, t, lengths)["slice_logits"][0]
        margin = logits[:, 1] - logits[:, 0]
        (margin[i] if own_logit else margin.sum()).backward()
        cam = F.relu((feats.grad.mean(dim=(2, 3), keepdim=True) * fmap).sum(1, keepdim=True))
        cams.append(cam[i : i + 1] if own_logit else cam)
    cam = F.interpolate(torch.cat(cams), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (cam / cam.max()).numpy()


def test_each_slice_heat_map_follows_that_slice_own_logit(tmp_path, monkeypatch):
    """Through the recurrent layers every slice's features move every slice's logit: slice i's map must come from
    slice i's logit alone (checked against one backward pass per slice), in chunks or not."""
    import torch

    import ml.predict as mlpredict
    from ml import preprocess

    predictor = Predictor(_tiny_checkpoint(tmp_path / "ckpt"), device="cpu")
    slices = [_slice(i in (2, 3), 40 + i) for i in range(5)]
    result = predictor.predict_slices(slices)
    x = torch.from_numpy(np.stack([preprocess.normalise(im) for im in result.images]))[None, :, None]
    expected = _reference_gradcam(predictor.model, x, own_logit=True)
    assert np.allclose(np.stack(result.heatmaps), expected, atol=1e-4)
    summed = _reference_gradcam(predictor.model, x, own_logit=False)
    assert not np.allclose(summed, expected, atol=1e-3), "the test must tell the two rules apart"
    monkeypatch.setattr(mlpredict, "GRADCAM_CHUNK", 2)
    chunked = predictor.predict_slices(slices)
    assert np.allclose(np.stack(chunked.heatmaps), expected, atol=1e-4)


def test_mask_supervised_training_run_records_the_weight_and_loads(synthetic_root, tmp_path):
    """--seg-weight: the run trains the mask heads on the CT-ICH masks, the card says so, and the checkpoint loads
    into the Predictor like any other."""
    out = tmp_path / "seg"
    argv = ["--dataset", "both", "--data-dir", str(synthetic_root), "--out", str(out), "--epochs", "1"]
    argv += ["--no-pretrained", "--size", "48", "--seed", "1", "--no-progress", "--seg-weight", "0.5"]
    assert mltrain.main(argv) == 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["architecture"]["seg"] is True and card["training"]["seg_weight"] == 0.5
    assert "hemorrhage masks" in card["training"]["loss"]
    predictor = Predictor(out, device="cpu")
    folder = synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain"
    result = predictor.predict_sources([folder / f"{s}.jpg" for s in range(1, 5)])
    assert len(result.slice_probabilities) == 4 and len(result.heatmaps) == 4


def test_mask_loss_is_added_for_slices_with_masks_only():
    """The mask term adds to the loss and moves the mask heads only where a mask is known; a batch without masks
    (Head CT) gives exactly the loss without the term."""
    import torch

    from ml.model import HemoNet

    rng = np.random.default_rng(0)
    slices = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
    masks = np.zeros((3, 64, 64), np.uint8)
    masks[1, 10:30, 20:40] = 255
    with_mask = mltrain.Item("ct_ich/1", "ct_ich", 1, slices, np.array([0, 1, 0]), masks)
    without = mltrain.Item("head_ct/1", "head_ct", 1, slices[:1], np.array([1]), None)
    torch.manual_seed(0)
    model = HemoNet(encoder="lite0", pretrained=False, embed=16, hidden=8, dropout=0.0, seg=True)

    def loss(batch, weight):
        model.zero_grad()
        value, _, _ = mltrain.batch_loss(
            model, batch, "cpu", pos_weight=2.0, generator=torch.Generator().manual_seed(4), seg_weight=weight
        )
        value.backward()
        return float(value.detach()), model.seg_mid.weight.grad

    base, grad = loss([(with_mask, 0, 3)], 0.0)
    assert grad is None
    seg, grad = loss([(with_mask, 0, 3)], 1.0)
    assert seg > base and grad is not None and grad.abs().sum() > 0
    alone, grad = loss([(without, 0, 1)], 1.0)
    assert grad is None and alone == pytest.approx(loss([(without, 0, 1)], 0.0)[0])


def test_window_augmented_run_shows_series_in_other_windows_and_says_so(synthetic_root, tmp_path):
    """--window-aug: the training input of a series is re-windowed (all its slices alike), the card records the
    share, and the checkpoint loads into the Predictor."""
    import torch

    from ml.model import HemoNet

    rng = np.random.default_rng(0)
    slices = rng.integers(0, 255, (3, 48, 48), dtype=np.uint8)
    series = mltrain.Item("ct_ich/1", "ct_ich", 1, slices, np.array([0, 1, 0]), None)
    model = HemoNet(encoder="small", pretrained=False, embed=16, hidden=8, dropout=0.0)
    batch = [(series, 0, 3)]
    plain = mltrain.training_input(model, batch, "cpu", generator=torch.Generator().manual_seed(1))[0]
    windowed = mltrain.training_input(model, batch, "cpu", generator=torch.Generator().manual_seed(1), window_aug=1.0)[
        0
    ]
    assert not torch.allclose(plain, windowed)
    # The same rotation/zoom/flip was drawn first; the window only stretches grey levels, keeping their order.
    a, b = plain.flatten(), windowed.flatten()
    order = torch.argsort(a)
    assert bool((b[order][1:] >= b[order][:-1] - 1e-5).all())

    out = tmp_path / "wa"
    argv = ["--dataset", "both", "--data-dir", str(synthetic_root), "--out", str(out), "--epochs", "1"]
    argv += ["--no-pretrained", "--size", "48", "--seed", "1", "--no-progress", "--window-aug", "0.5"]
    assert mltrain.main(argv) == 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["training"]["window_aug"] == 0.5 and "narrower display window" in card["training"]["augmentation"]
    assert "--window-aug 0.5" in card["command"]
    result = Predictor(out, device="cpu").predict_sources(
        [synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain" / f"{s}.jpg" for s in range(1, 4)]
    )
    assert len(result.slice_probabilities) == 3
