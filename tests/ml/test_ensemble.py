"""Two-member ensembles: the averaged-logit module, its Grad-CAM, `ml.train --train-seed` and `python -m ml.ensemble`
on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml import ensemble, evaluate
from ml import train as mltrain
from ml.model import HemoEnsemble, HemoNet, build_model, members_of, scan_probability
from ml.predict import Predictor
from tests.ml.conftest import phantom_slice as _slice

TINY = {"encoder": "small", "recurrent": True, "in_channels": 1, "embed": 16, "hidden": 8, "dropout": 0.0}


def _members(seeds=(0, 2)):
    """Untrained tiny members; seeds 0 and 2 give a scan whose ensemble map is not all below zero."""
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(HemoNet(**TINY, pretrained=False).eval())
    return out


def test_ensemble_averages_the_members_logits_and_keeps_the_output_form():
    members = _members()
    model = HemoEnsemble(members).eval()
    x = torch.randn(2, 5, 1, 32, 32)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        outs = [m(x, lengths) for m in members]
        out = model(x, lengths, return_features=True)
    for key in ("slice_logits", "scan_logits"):
        assert torch.allclose(out[key], (outs[0][key] + outs[1][key]) / 2, atol=1e-6)
        assert not torch.allclose(out[key], outs[0][key], atol=1e-3), "the members must differ for this test"
    assert torch.equal(out["mask"], outs[0]["mask"])
    assert len(out["features"]) == 2 and out["features"][0].shape[0] == 2 * 5
    # Pooling reads the averaged logits like one model's: padded slices stay out of the max.
    assert scan_probability(out, "max_slice").shape == (2,)
    assert model.config == dict(TINY, seg=False, members=2) and members_of(model) == members
    assert members_of(members[0]) == [members[0]]


def test_ensemble_refuses_mixed_architectures_and_single_members():
    with pytest.raises(ValueError, match="at least two"):
        HemoEnsemble(_members((0,)))
    other = HemoNet(**dict(TINY, hidden=4), pretrained=False)
    with pytest.raises(ValueError, match="differ in architecture"):
        HemoEnsemble([_members((0,))[0], other])


def _ensemble_checkpoint(folder):
    """A checkpoint folder holding an untrained two-member ensemble, as ml.ensemble writes one."""
    model = HemoEnsemble(_members())
    folder.mkdir()
    mltrain.save_state_dict(model, folder / "model.pt")
    card = {"architecture": model.config, "version": "tiny-ens", "threshold": 0.5, "input": {"size": 32}}
    (folder / "metadata.json").write_text(json.dumps(card))
    return model, folder


def test_build_model_reads_the_member_count_from_the_card(tmp_path):
    model, folder = _ensemble_checkpoint(tmp_path / "ens")
    loaded, _ = mltrain.load_model(folder)
    assert isinstance(loaded, HemoEnsemble) and len(loaded.members) == 2
    for a, b in zip(loaded.members, model.members, strict=True):
        assert torch.allclose(a.slice_head[0].weight, b.slice_head[0].weight.half().float())
    assert isinstance(build_model(TINY), HemoNet)


def _reference_ensemble_gradcam(model, x):
    """Grad-CAM of the ensemble by brute force: one backward pass per slice from the ensemble's own slice logit
    (the mean of the members') through every member's whole feature map; the maps of all members summed."""
    import torch.nn.functional as F

    t = x.shape[1]
    lengths = torch.tensor([t])
    with torch.no_grad():
        fmaps = [m.encoder(x.reshape(t, *x.shape[2:])) for m in model.members]
    cams = []
    for i in range(t):
        feats = [f.clone().requires_grad_(True) for f in fmaps]
        pairs = zip(model.members, feats, strict=True)
        logits = sum(m.forward_features(f, 1, t, lengths)["slice_logits"][0] for m, f in pairs) / len(feats)
        (logits[i, 1] - logits[i, 0]).backward()
        grads = [f.grad.mean(dim=(2, 3), keepdim=True) for f in feats]
        cam = sum((g * fm).sum(1, keepdim=True) for g, fm in zip(grads, fmaps, strict=True))
        cams.append(F.relu(cam)[i : i + 1])
    cam = F.interpolate(torch.cat(cams), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return (cam / cam.max()).numpy()


def test_ensemble_heat_map_is_the_grad_cam_of_the_averaged_logit(tmp_path):
    from ml import preprocess

    model, folder = _ensemble_checkpoint(tmp_path / "ens")
    predictor = Predictor(folder, device="cpu")
    result = predictor.predict_slices([_slice(i in (1, 2), 60 + i) for i in range(4)])
    x = torch.from_numpy(np.stack([preprocess.normalise(im) for im in result.images]))[None, :, None]
    expected = _reference_ensemble_gradcam(predictor.model, x)
    assert (expected > 0).mean() > 0.3, "the reference map must light up for the comparison to mean something"
    assert np.allclose(np.stack(result.heatmaps), expected, atol=1e-4)
    # Not simply the first member's map: the second member's evidence is in it.
    alone = Predictor.__new__(Predictor)
    alone.model = predictor.model.members[0]
    first_only = alone._gradcam(x, torch.tensor([4]))
    assert not np.allclose(np.stack(first_only), expected, atol=1e-3)


def _train_member(root, out, train_seed, *extra):
    argv = ["--dataset", "both", "--data-dir", str(root), "--out", str(out), "--epochs", "1", "--encoder", "small"]
    argv += ["--no-pretrained", "--size", "48", "--seed", "2", "--tta", "none", "--no-progress"]
    argv += ["--train-seed", str(train_seed), *extra]
    assert mltrain.main(argv) == 0
    return json.loads((out / "metadata.json").read_text())


def test_train_seed_members_join_into_one_checkpoint_that_scores_as_their_average(synthetic_root, tmp_path):
    a = _train_member(synthetic_root, tmp_path / "a", 0)
    b = _train_member(synthetic_root, tmp_path / "b", 1)
    # --train-seed changes the weights, never the split.
    assert (a["seed"], a["train_seed"], b["train_seed"]) == (2, 0, 1) and a["splits"] == b["splits"]
    assert a["version"].endswith("-s2t0") and b["version"].endswith("-s2t1")
    wa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert not torch.equal(wa["slice_head.0.weight"], wb["slice_head.0.weight"])

    out = tmp_path / "ens"
    argv = ["--members", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]
    assert ensemble.main([*argv, "--data-dir", str(synthetic_root), "--tta", "none"]) == 0
    for name in ("model.pt", "metadata.json", "curves.png", "roc.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    card = json.loads((out / "metadata.json").read_text())
    assert card["architecture"]["members"] == 2 and card["splits"] == a["splits"] and card["seed"] == 2
    assert card["command"].startswith("python -m ml.ensemble --members")
    assert [m["version"] for m in card["ensemble"]["members"]] == [a["version"], b["version"]]
    assert card["ensemble"]["reproduce"][:2] == [a["command"], b["command"]]
    assert card["training"]["train_minutes"] == pytest.approx(
        a["training"]["train_minutes"] + b["training"]["train_minutes"], abs=0.02
    )
    assert card["parameters"] == a["parameters"] + b["parameters"]
    assert card["scan_pooling"] in ("head", "max_slice", "mean") and 0 < card["threshold"] < 1

    # The Predictor runs the ensemble: its slice probabilities are the softmax of the members' mean logits.
    slices = [_slice(i in (1, 2), 30 + i) for i in range(4)]
    result = Predictor(out, device="cpu").predict_slices(slices)
    x = torch.from_numpy(np.stack([mltrain.preprocess.normalise(im) for im in result.images]))[None, :, None]
    with torch.inference_mode():
        logits = [mltrain.load_model(tmp_path / m)[0](x)["slice_logits"][0] for m in ("a", "b")]
    expected = torch.softmax((logits[0] + logits[1]) / 2, -1)[:, 1].numpy()
    assert np.allclose(result.slice_probabilities, expected, atol=1e-5)
    assert [h.shape for h in result.heatmaps] == [(48, 48)] * 4  # their values: the Grad-CAM test above

    # The card's test figures are what ml.evaluate measures on the stored test ids.
    report = evaluate.evaluate(out, data_dir=synthetic_root / "ct_ich", layout="ct_ich", split="test")
    assert report["scan"]["accuracy"] == pytest.approx(card["metrics"]["test"]["ct_ich"]["scan"]["accuracy"])

    # A card from before the mask heads and the stopping numbers were recorded joins a new one: what it implies is
    # what the new one says.
    unsaid = ("seg_weight", "ema_decay", "freeze_blocks", "patience", "min_epochs")
    old = dict(a, architecture={k: v for k, v in a["architecture"].items() if k != "seg"})
    old["training"] = {k: v for k, v in a["training"].items() if k not in unsaid}
    ensemble.check_members([old, b])
    with pytest.raises(ValueError, match="differ in training 'patience'"):
        ensemble.check_members([old, dict(b, training=dict(b["training"], patience=8))])

    # Members that would be the same model, or sit on another split, are refused.
    with pytest.raises(ValueError, match="repeat a training seed"):
        ensemble.check_members([a, dict(a, version="copy")])
    other_split = dict(b, seed=5, splits={"head_ct": {}, "ct_ich": {}})
    with pytest.raises(ValueError, match="differ in 'splits'"):
        ensemble.check_members([a, other_split])
    with pytest.raises(ValueError, match="differ in training 'window'"):
        ensemble.check_members([a, dict(b, training=dict(b["training"], window=16))])
    with pytest.raises(ValueError, match="already an ensemble"):
        ensemble.check_members([card, dict(card, train_seed=[5, 6])])
