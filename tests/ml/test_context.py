"""Neighbouring slices as channels (--context): which slices a slice sees, how the pretrained stem starts, that
training augments a slice and its neighbours alike, and a training run whose checkpoint predicts like any other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml import train as mltrain
from ml.encoders import EfficientNetLite0
from ml.model import HemoNet
from ml.predict import Predictor
from tests.ml.conftest import phantom_slice

TINY = {"encoder": "small", "embed": 16, "hidden": 8, "dropout": 0.0, "pretrained": False}


def _numbered(b: int, t: int, size: int = 4) -> torch.Tensor:
    """B x T x 1 x size x size slices whose every pixel is 100 * scan + slice, so a channel names its source."""
    values = torch.tensor([[100.0 * i + j for j in range(t)] for i in range(b)])
    return values[:, :, None, None, None].expand(b, t, 1, size, size).clone()


def test_each_slice_sees_its_neighbours_within_its_own_scan():
    model = HemoNet(context=1, **TINY)
    x = _numbered(2, 5)
    x[1, 3:] = -1.0  # padding after the second scan's 3 slices: must never be read
    stacked = model.with_context(x, torch.tensor([5, 3]))
    assert stacked.shape == (2, 5, 3, 4, 4)
    seen = stacked[:, :, :, 0, 0]
    assert seen[0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]  # ends repeated
    assert seen[1, :3].tolist() == [[100, 100, 101], [100, 101, 102], [101, 102, 102]]
    # Two neighbours per side; a single image is its own neighbour.
    wide = HemoNet(context=2, **TINY).with_context(_numbered(1, 3), torch.tensor([3]))
    assert wide[0, :, :, 0, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]
    single = model.with_context(_numbered(1, 1), torch.tensor([1]))
    assert single[0, 0, :, 0, 0].tolist() == [0, 0, 0]
    # Already stacked input passes as is; a model without neighbours leaves slices alone; other shapes are refused.
    assert model.with_context(stacked, torch.tensor([5, 3])) is stacked
    assert HemoNet(**TINY).with_context(x, torch.tensor([5, 3])) is x
    with pytest.raises(ValueError, match="channels"):
        model.with_context(torch.zeros(1, 2, 2, 4, 4), torch.tensor([2]))
    with pytest.raises(ValueError, match="in_channels"):
        HemoNet(context=1, in_channels=3, **TINY)
    assert model.config["context"] == 1 and "context" not in HemoNet(**TINY).config  # old cards stay equal


def test_untrained_context_encoder_reads_the_middle_slice_alone_and_its_stem_trains():
    """The pretrained stem puts the grey filters on the middle channel and zero on the neighbours, so before training
    the 2.5D encoder is exactly the single-slice one whatever the neighbours hold; the stem conv is then left out of
    the frozen layers (its batch norm stays frozen), or the neighbours could never be learnt."""
    torch.manual_seed(0)
    grey = EfficientNetLite0(1)
    grey.load_imagenet()
    stacked = EfficientNetLite0(3, centre_only=True)
    stacked.load_imagenet()
    plain = EfficientNetLite0(3)
    plain.load_imagenet()
    grey.eval(), stacked.eval(), plain.eval()
    middle = torch.randn(2, 1, 64, 64)
    neighbours = torch.cat([torch.randn(2, 1, 64, 64), middle, torch.randn(2, 1, 64, 64)], dim=1)
    with torch.no_grad():
        assert torch.allclose(stacked(neighbours), grey(middle), atol=1e-5)
        assert not torch.allclose(plain(neighbours), grey(middle), atol=1e-3), "RGB filters read every channel"
    model = HemoNet(context=1, pretrained=True)
    frozen = mltrain.frozen_modules(model, 3)
    assert model.encoder._conv_stem not in frozen and model.encoder._bn0 in frozen
    single = HemoNet(pretrained=True)
    assert single.encoder._conv_stem in mltrain.frozen_modules(single, 3)


def test_training_augments_a_slice_and_its_neighbours_alike():
    """Per-slice augmentation draws a transform per slice; the neighbours are stacked first, so in a series of
    identical slices every channel of every augmented slice is still identical (stacking after augmenting would
    mix differently rotated slices)."""
    model = HemoNet(context=1, **TINY)
    series = np.stack([phantom_slice(True, 0, size=32)] * 4)
    item = mltrain.Item("ct_ich/x", "ct_ich", 1, series, np.ones(4, np.int64))
    generator = torch.Generator().manual_seed(0)
    x, lengths, masks, known = mltrain.training_input(model, [(item, 0, 4)], "cpu", generator=generator)
    assert x.shape == (1, 4, 3, 32, 32) and lengths.tolist() == [4] and masks is None and known is None
    assert torch.equal(x[0, :, 0], x[0, :, 1]) and torch.equal(x[0, :, 1], x[0, :, 2])
    assert not torch.allclose(x[0, 0, 1], x[0, 1, 1]), "each slice must have had a transform of its own"


def test_context_training_run_records_it_and_predicts_series_and_images(synthetic_root, tmp_path):
    out = tmp_path / "ctx"
    argv = ["--dataset", "both", "--data-dir", str(synthetic_root), "--out", str(out), "--epochs", "1"]
    argv += ["--size", "48", "--seed", "2", "--no-progress", "--context", "1", "--tta", "none"]
    assert mltrain.main(argv) == 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["architecture"]["context"] == 1 and "neighbours" in card["input"]
    assert card["training"]["frozen"] == "stem batch norm + first 3 blocks" and "at zero" in card["encoder_init"]
    state = torch.load(out / "model.pt", weights_only=True)
    stem = state["encoder._conv_stem.weight"].float()
    assert stem.shape[1] == 3 and stem[:, [0, 2]].abs().max() > 0, "the neighbour filters trained from zero"

    predictor = Predictor(out, device="cpu")
    folder = synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain"
    series = predictor.predict_sources([folder / f"{s}.jpg" for s in range(1, 5)])
    assert len(series.slice_probabilities) == 4 and len(series.heatmaps) == 4
    assert all(h.shape == (48, 48) and np.isfinite(h).all() for h in series.heatmaps)
    image = predictor.predict_sources([folder / "2.jpg"])
    assert len(image.slice_probabilities) == 1 and 0.0 <= image.probability <= 1.0


def _cnn_only_checkpoint(folder, context: int):
    """A tiny CNN-only checkpoint (no recurrent layers: a slice's score depends on what its encoder reads alone)
    whose neighbour filters are set, as training would set them."""
    torch.manual_seed(0)
    config = {"encoder": "small", "recurrent": False, "in_channels": 1, "embed": 16, "hidden": 8, "dropout": 0.0}
    config |= {"context": context} if context else {}
    model = HemoNet(**config, pretrained=False)
    with torch.no_grad():  # an untrained head barely moves with its input: scale it so differences show
        model.slice_head[-1].weight.mul_(50)
    folder.mkdir()
    mltrain.save_state_dict(model, folder / "model.pt")
    card = {"architecture": config, "version": f"tiny-ctx{context}", "threshold": 0.5, "input": {"size": 48}}
    (folder / "metadata.json").write_text(json.dumps(card))
    return folder


def test_inference_reads_the_neighbours_of_a_slice_in_its_series(synthetic_root, tmp_path):
    """Without recurrent layers a slice's score comes from its encoder input alone: with neighbours it changes when
    the slice is scored inside its series instead of alone; without them it does not."""
    folder = synthetic_root / "ct_ich" / "Patients_CT" / "001" / "brain"
    series_paths = [folder / f"{s}.jpg" for s in range(1, 5)]
    for context in (0, 1):
        predictor = Predictor(_cnn_only_checkpoint(tmp_path / f"ctx{context}", context), device="cpu")
        in_series = predictor.predict_sources(series_paths).slice_probabilities[1]
        alone = predictor.predict_sources([series_paths[1]]).slice_probabilities[0]
        assert np.isclose(in_series, alone, atol=1e-6) == (context == 0), context
