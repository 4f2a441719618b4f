"""The bone-suppressed second channel (--bone-channel): what it holds, that the untrained encoder reads the slice
alone and its stem trains, and a training run whose checkpoint and card say so and predict like any other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml import preprocess
from ml import train as mltrain
from ml.encoders import EfficientNetLite0
from ml.model import BONE_GREY, HemoNet, suppress_bone
from ml.predict import Predictor
from tests.ml.conftest import phantom_slice

TINY = {"encoder": "small", "embed": 16, "hidden": 8, "dropout": 0.0, "pretrained": False}


def test_bone_is_set_to_air_and_blood_and_brain_are_kept():
    """Greys of known HU in the 40/120 window: skull (1000 HU) and anything from 98 HU up become air; blood at
    60-96 HU, brain at 35 HU and air keep their value exactly."""
    hu = np.array([[-1000.0, 35.0, 60.0, 90.0, 96.0, 100.0, 400.0, 1000.0]])
    grey = preprocess.apply_window(hu, *preprocess.MODEL_WINDOW)
    x = torch.from_numpy(preprocess.normalise(grey))[None, None]  # 1 x 1 x 1 x 8
    out = suppress_bone(x)[0, 0, 0]
    kept = grey[0] < BONE_GREY
    assert torch.equal(out[torch.from_numpy(kept)], x[0, 0, 0][torch.from_numpy(kept)])
    air = torch.from_numpy(preprocess.normalise(np.zeros(1, np.uint8)))
    assert torch.allclose(out[torch.from_numpy(~kept)], air.expand(int((~kept).sum())))
    assert kept.tolist() == [True] * 5 + [False] * 3, "blood up to 96 HU kept, 100 HU and above suppressed"


def test_encoder_input_is_the_slice_beside_its_bone_suppressed_copy():
    model = HemoNet(bone_channel=True, **TINY)
    slice_u8 = phantom_slice(True, 0, size=32)
    x = torch.from_numpy(preprocess.normalise(slice_u8))[None, None, None].expand(1, 3, 1, 32, 32)
    flat = model.encoder_input(x, torch.tensor([3]))
    assert flat.shape == (3, 2, 32, 32)
    assert torch.equal(flat[:, 0], x[0, :, 0]) and torch.equal(flat[:, 1:], suppress_bone(x[0]))
    assert (slice_u8 >= BONE_GREY).any() and not torch.equal(flat[:, 0], flat[:, 1]), "the phantom has a skull"
    assert model.config["bone_channel"] is True and "bone_channel" not in HemoNet(**TINY).config
    with pytest.raises(ValueError, match="single-channel"):
        HemoNet(bone_channel=True, context=1, **TINY)


def test_untrained_bone_channel_encoder_reads_the_slice_alone_and_its_stem_trains():
    torch.manual_seed(0)
    grey = EfficientNetLite0(1)
    grey.load_imagenet()
    two = EfficientNetLite0(2, grey_index=0)
    two.load_imagenet()
    grey.eval(), two.eval()
    slice_ = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(two(torch.cat([slice_, torch.randn(2, 1, 64, 64)], 1)), grey(slice_), atol=1e-5)
    model = HemoNet(bone_channel=True, pretrained=True)
    frozen = mltrain.frozen_modules(model, 3)
    assert model.encoder._conv_stem not in frozen and model.encoder._bn0 in frozen


def test_bone_channel_training_run_records_it_and_predicts(synthetic_root, tmp_path):
    out = tmp_path / "bone"
    argv = ["--dataset", "ct_ich", "--data-dir", str(synthetic_root), "--out", str(out), "--epochs", "1"]
    argv += ["--encoder", "small", "--no-pretrained", "--size", "32", "--no-progress", "--bone-channel"]
    assert mltrain.main(argv) == 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["architecture"]["bone_channel"] is True and "bone_suppressed" in card["input"]
    predictor = Predictor(out, device="cpu")
    assert predictor.model.bone_channel and predictor.model.encoder.features[0].in_channels == 2
    result = predictor.predict_slices([phantom_slice(True, s, size=64) for s in range(3)])
    assert len(result.slice_probabilities) == 3 and len(result.heatmaps) == 3
