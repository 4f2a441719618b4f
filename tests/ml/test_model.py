"""Model and augmentation: shapes, sequences of one, padding, determinism, pretrained load, training-only aug."""

from __future__ import annotations

import pytest
import torch

from ml.augment import augment_batch, augment_with_masks
from ml.encoders import EfficientNetLite0
from ml.model import HemoNet, forward_tta, scan_probability


def small_model(seed=0, recurrent=True):
    torch.manual_seed(seed)
    return HemoNet(encoder="small", recurrent=recurrent, pretrained=False, embed=32, hidden=16).eval()


def test_output_shapes_for_series_and_single_images():
    model = small_model()
    x = torch.randn(3, 5, 1, 64, 64)
    out = model(x, torch.tensor([5, 2, 1]))
    assert out["slice_logits"].shape == (3, 5, 2)
    assert out["scan_logits"].shape == (3, 2)
    single = model(torch.randn(4, 1, 1, 64, 64))
    assert single["slice_logits"].shape == (4, 1, 2)
    for pool in ("head", "max_slice", "mean"):
        p = scan_probability(out, pool)
        assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())


def test_padding_does_not_change_a_sequence():
    model = small_model(recurrent=True)
    seq = torch.randn(1, 3, 1, 64, 64)
    alone = model(seq)
    padded = torch.cat([seq, torch.zeros(1, 4, 1, 64, 64)], dim=1)
    batch = torch.cat([padded, torch.randn(1, 7, 1, 64, 64)])
    together = model(batch, torch.tensor([3, 7]))
    torch.testing.assert_close(together["slice_logits"][0, :3], alone["slice_logits"][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together["scan_logits"][0], alone["scan_logits"][0], atol=1e-5, rtol=1e-4)


def test_recurrent_layers_mix_slices_and_cnn_only_does_not():
    x = torch.randn(1, 4, 1, 64, 64)
    y = x.clone()
    y[0, 3] = torch.randn(1, 64, 64)  # change only the last slice
    for recurrent, should_change in ((True, True), (False, False)):
        model = small_model(recurrent=recurrent)
        a, b = model(x)["slice_logits"][0, 0], model(y)["slice_logits"][0, 0]
        assert (not torch.equal(a, b)) == should_change


def test_determinism_under_a_seed():
    x = torch.randn(2, 3, 1, 64, 64)
    a = small_model(seed=7)(x)["scan_logits"]
    b = small_model(seed=7)(x)["scan_logits"]
    c = small_model(seed=8)(x)["scan_logits"]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_lite0_loads_imagenet_weights_strictly_for_grey_input():
    enc = EfficientNetLite0(in_channels=1)
    enc.load_imagenet()  # strict=True inside: every encoder tensor must match by name and shape
    assert enc._conv_stem.weight.shape == (32, 1, 3, 3)
    assert len(enc._blocks) == 16
    assert not any("_se_" in name for name, _ in enc.named_parameters()), "Lite0 has no squeeze-excite"
    enc.eval()
    with torch.no_grad():
        fmap = enc(torch.randn(2, 1, 128, 128))
    assert fmap.shape == (2, 1280, 4, 4)


def test_augmentation_only_in_training_mode_and_seeded():
    x = torch.randn(6, 1, 32, 32)
    assert torch.equal(augment_batch(x, training=False), x)
    a = augment_batch(x, training=True, generator=torch.Generator().manual_seed(1))
    b = augment_batch(x, training=True, generator=torch.Generator().manual_seed(1))
    c = augment_batch(x, training=True, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape
    assert not torch.allclose(a, x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_flip_only_augmentation_mirrors():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = augment_batch(x, training=True, max_rotation_deg=0.0, zoom=(1.0, 1.0), flip_p=1.0, contrast=0.0)
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), atol=1e-4, rtol=1e-4)


def test_flip_tta_averages_both_views_and_is_mirror_invariant():
    model = small_model()
    x = torch.randn(2, 3, 1, 64, 64)
    lengths = torch.tensor([3, 2])
    with torch.no_grad():
        plain = forward_tta(model, x, lengths, "none")
        mirrored = model(torch.flip(x, dims=[-1]), lengths)
        both = forward_tta(model, x, lengths, "hflip")
        of_mirror = forward_tta(model, torch.flip(x, dims=[-1]), lengths, "hflip")
    torch.testing.assert_close(both["scan_logits"], (plain["scan_logits"] + mirrored["scan_logits"]) / 2)
    torch.testing.assert_close(both["slice_logits"], of_mirror["slice_logits"], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain["scan_logits"], both["scan_logits"])


def test_series_augmentation_transforms_every_slice_of_a_series_alike():
    one = torch.randn(1, 1, 32, 32)
    x = one.repeat(8, 1, 1, 1)  # two series of four identical slices
    out = augment_batch(x, training=True, generator=torch.Generator().manual_seed(3), series_length=4)
    for series in (out[:4], out[4:]):
        for s in series[1:]:
            torch.testing.assert_close(s, series[0])
    assert not torch.allclose(out[0], out[4]), "each series draws its own transform"
    per_slice = augment_batch(x, training=True, generator=torch.Generator().manual_seed(3), series_length=1)
    assert not torch.allclose(per_slice[0], per_slice[1])
    with pytest.raises(ValueError, match="series of 3"):
        augment_batch(x, training=True, series_length=3)


def test_masks_are_augmented_exactly_as_their_slices():
    """A mask drawn on a bright off-centre square stays on that square through rotation, zoom and flip, and the
    slices get the same random transform as without masks."""
    x = torch.full((6, 1, 64, 64), -2.0)
    x[:, :, 10:22, 38:52] = 2.0
    masks = (x > 0).float()
    out, moved = augment_with_masks(x, masks, generator=torch.Generator().manual_seed(5), contrast=0.0)
    plain = augment_batch(x, training=True, generator=torch.Generator().manual_seed(5), contrast=0.0)
    torch.testing.assert_close(out, plain)
    flips = 0
    for img, m in zip(out, moved, strict=True):
        bright, covered = img[0] > 0, m[0] > 0.5
        assert (bright & covered).sum() / (bright | covered).sum() > 0.9
        flips += int(covered[:, :32].sum() > covered[:, 32:].sum())
    assert 0 < flips < 6, "the draws include flipped and unflipped slices"
    assert augment_with_masks(x, None, generator=torch.Generator().manual_seed(5))[1] is None


def test_mask_heads_read_the_stride_16_and_last_maps():
    torch.manual_seed(0)
    model = HemoNet(encoder="lite0", pretrained=False, embed=32, hidden=16, seg=True).eval()
    out = model(torch.randn(2, 3, 1, 128, 128), return_seg=True)
    assert [tuple(s.shape) for s in out["seg_logits"]] == [(6, 1, 8, 8), (6, 1, 4, 4)]
    assert out["slice_logits"].shape == (2, 3, 2)
    plain = model(torch.randn(1, 2, 1, 128, 128))
    assert "seg_logits" not in plain and model.config["seg"] is True
    with pytest.raises(ValueError, match="no mask heads"):
        small_model()(torch.randn(1, 1, 1, 64, 64), return_seg=True)
    with pytest.raises(ValueError, match="lite0"):
        HemoNet(encoder="small", pretrained=False, seg=True)
