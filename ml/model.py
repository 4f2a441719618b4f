"""The sequence model from the paper: a Conv2D encoder per slice, bidirectional LSTM and bidirectional GRU branches
over the ordered slices, outputs concatenated, dense layers, per-slice and per-scan logits (2 classes, for
cross-entropy). A single image is a sequence of one. recurrent=False gives the CNN-only ablation. seg=True adds two
1x1-conv mask heads on the encoder's stride-16 and last feature maps, trained on the CT-ICH hemorrhage masks beside
the labels (mask supervision); inference does not use them. context=c > 0 gives each slice its c neighbours on each
side as extra input channels (2.5D, as in the RSNA 2019 winners): the encoder sees slices i-c..i+c, the series' ends
repeated; a single image is its own neighbour. bone_channel=True gives the encoder a second channel derived from the
slice itself: the slice with saturated bone (grey >= BONE_GREY in the model window) set to air, so that a thin bleed
along the inner table of the skull lies between black and brain instead of merging with the white bone beside it
(the same arithmetic for a picture and for DICOM, since both reach the model as the windowed slice).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ml.encoders import build_encoder
from ml.preprocess import NORM_MEAN, NORM_STD

# Grey level (0-255, model window 40/120: above about 98 HU) from which the bone-suppressed channel counts a pixel
# as bone: the window saturates at 100 HU, so this is the skull and calcification, not blood (50-90 HU).
BONE_GREY = 250


class HemoNet(nn.Module):
    def __init__(
        self,
        *,
        encoder: str = "lite0",
        recurrent: bool = True,
        in_channels: int = 1,
        embed: int = 256,
        hidden: int = 128,
        dropout: float = 0.3,
        pretrained: bool = True,
        seg: bool = False,
        context: int = 0,
        bone_channel: bool = False,
    ):
        super().__init__()
        if bone_channel and (context or in_channels != 1):
            raise ValueError("the bone-suppressed channel is derived from a single-channel slice without neighbours")
        if context < 0:
            raise ValueError(f"context is a number of neighbouring slices per side (0 or more), not {context}")
        if context and in_channels != 1:
            raise ValueError(f"context {context} needs single-channel slices (in_channels 1, not {in_channels})")
        self.config = {
            "encoder": encoder,
            "recurrent": recurrent,
            "in_channels": in_channels,
            "embed": embed,
            "hidden": hidden,
            "dropout": dropout,
            "seg": seg,
        }
        if context:
            self.config["context"] = context  # absent from cards of models without neighbours
        if bone_channel:
            self.config["bone_channel"] = True  # absent from cards of models without it
        self.context = context
        self.bone_channel = bone_channel
        self.encoder = build_encoder(
            encoder,
            in_channels=in_channels + 2 * context + int(bone_channel),
            pretrained=pretrained,
            centre_only=context > 0,
            grey_index=0 if bone_channel else None,
        )
        self.seg = seg
        if seg:
            if not hasattr(self.encoder, "mid_channels"):
                raise ValueError(f"mask supervision needs the lite0 encoder, not {encoder!r}")
            self.seg_mid = nn.Conv2d(self.encoder.mid_channels, 1, 1)
            self.seg_last = nn.Conv2d(self.encoder.out_channels, 1, 1)
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.out_channels, embed), nn.ReLU())
        self.recurrent = recurrent
        if recurrent:
            self.lstm = nn.LSTM(embed, hidden, batch_first=True, bidirectional=True)
            self.gru = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
            width = 4 * hidden + embed  # both branches concatenated, plus the slice's own embedding
        else:
            width = embed
        self.slice_head = nn.Sequential(nn.Linear(width, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 2))
        self.attention = nn.Linear(width, 1)
        self.scan_head = nn.Sequential(nn.Linear(2 * width, 128), nn.ReLU(), nn.Dropout(dropout), nn.Linear(128, 2))

    @classmethod
    def from_config(cls, config: dict, *, pretrained: bool = False) -> HemoNet:
        return cls(**config, pretrained=pretrained)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        return_features: bool = False,
        return_seg: bool = False,
    ):
        """x: B x T x C x H x W (zero-padded along T), lengths: B (default all T).

        Returns {"slice_logits": B x T x 2, "scan_logits": B x 2, ["features": (B*T) x C' x h x w],
        ["seg_logits": [(B*T) x 1 x H/16 x W/16, (B*T) x 1 x H/32 x W/32]]}.
        """
        b, t = x.shape[:2]
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        flat = self.encoder_input(x, lengths)
        if return_seg:
            if not self.seg:
                raise ValueError("this model has no mask heads (seg=False)")
            fmap, mid = self.encoder(flat, return_mid=True)
        else:
            fmap = self.encoder(flat)
        out = self.forward_features(fmap, b, t, lengths)
        if return_features:
            out["features"] = fmap
        if return_seg:
            out["seg_logits"] = [self.seg_mid(mid), self.seg_last(fmap)]
        return out

    def encoder_input(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x T x 1 x H x W slices -> (B*T) x C x H x W, what the encoder reads (with the neighbours or the
        bone-suppressed channel, if any)."""
        flat = self.with_context(x, lengths).flatten(0, 1)
        if self.bone_channel:
            flat = torch.cat([flat, suppress_bone(flat)], dim=1)
        return flat

    def with_context(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x T x 1 x H x W slices -> B x T x (1 + 2c) x H x W: slice i with slices i-c..i+c as channels, each index
        clamped to the scan's own slices (0..length-1), so padding never enters. Input that already has the
        neighbours (training stacks them before augmentation, so a rotation turns all of them alike) passes as is."""
        if not self.context or x.shape[2] == 1 + 2 * self.context:
            return x
        if x.shape[2] != 1:
            raise ValueError(f"expected 1 or {1 + 2 * self.context} channels per slice, got {x.shape[2]}")
        b, t = x.shape[:2]
        last = (lengths.to(x.device).clamp(min=1) - 1)[:, None, None]  # B x 1 x 1
        offsets = torch.arange(-self.context, self.context + 1, device=x.device)
        index = (torch.arange(t, device=x.device)[None, :, None] + offsets).clamp(min=0)  # 1 x T x (1 + 2c)
        index = torch.minimum(index, last).reshape(b, t * (1 + 2 * self.context))
        gathered = x[:, :, 0][torch.arange(b, device=x.device)[:, None], index]  # B x T(1 + 2c) x H x W
        return gathered.reshape(b, t, 1 + 2 * self.context, *x.shape[-2:])

    def forward_features(self, fmap: torch.Tensor, b: int, t: int, lengths: torch.Tensor) -> dict:
        """Everything after the encoder: (B*T) x C x h x w feature maps -> slice and scan logits. Split out so
        Grad-CAM can differentiate from the last conv feature map without a second encoder pass."""
        lengths = lengths.cpu()
        mask = torch.arange(t)[None, :] < lengths[:, None]  # B x T
        emb = self.embed(fmap.mean(dim=(2, 3))).reshape(b, t, -1)
        if self.recurrent:
            packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
            lstm_out, _ = self.lstm(packed)
            gru_out, _ = self.gru(packed)
            lstm_out, _ = pad_packed_sequence(lstm_out, batch_first=True, total_length=t)
            gru_out, _ = pad_packed_sequence(gru_out, batch_first=True, total_length=t)
            seq = torch.cat([lstm_out, gru_out, emb], dim=-1)
        else:
            seq = emb
        slice_logits = self.slice_head(seq)
        # Scan logits: attention-weighted mean and max over the valid slices (a bleed may sit on one slice).
        mask_d = mask.to(seq.device)
        scores = self.attention(seq).squeeze(-1).masked_fill(~mask_d, float("-inf"))
        weights = torch.softmax(scores, dim=1).unsqueeze(-1)
        pooled = (weights * seq).sum(1)
        maxed = seq.masked_fill(~mask_d.unsqueeze(-1), float("-inf")).amax(1)
        scan_logits = self.scan_head(torch.cat([pooled, maxed], dim=-1))
        return {"slice_logits": slice_logits, "scan_logits": scan_logits, "mask": mask_d}


class HemoEnsemble(nn.Module):
    """Members of one architecture trained with different training seeds on the same split; their per-slice and
    per-scan logits are averaged (for two classes, the mean of the members' log-odds). The output has HemoNet's
    form, so pooling, test-time augmentation, scoring and thresholds treat an ensemble as one model. Averaging
    members that differ only in their training seed evens out how far the outcome of any one run depends on luck,
    which on the small CT-ICH set is large (see bench/results/notes.md)."""

    def __init__(self, members: list[HemoNet]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        configs = [m.config for m in members]
        if any(c != configs[0] for c in configs[1:]):
            raise ValueError(f"ensemble members differ in architecture: {configs}")
        self.members = nn.ModuleList(members)
        self.config = dict(configs[0], members=len(members))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, *, return_features: bool = False):
        """As HemoNet.forward; "features" is then the list of the members' last feature maps."""
        outs = [m(x, lengths, return_features=return_features) for m in self.members]
        out = {
            "slice_logits": torch.stack([o["slice_logits"] for o in outs]).mean(0),
            "scan_logits": torch.stack([o["scan_logits"] for o in outs]).mean(0),
            "mask": outs[0]["mask"],
        }
        if return_features:
            out["features"] = [o["features"] for o in outs]
        return out


def build_model(config: dict) -> HemoNet | HemoEnsemble:
    """An untrained model (weights to be loaded) for a card's `architecture`: a HemoNet, or with "members": n an
    ensemble of n HemoNets of that configuration."""
    config = dict(config)
    n = int(config.pop("members", 1))
    if n == 1:
        return HemoNet.from_config(config, pretrained=False)
    return HemoEnsemble([HemoNet.from_config(config, pretrained=False) for _ in range(n)])


def members_of(model: nn.Module) -> list[HemoNet]:
    """The HemoNets a model averages: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, HemoEnsemble) else [model]


def decision_threshold(n_slices: int, threshold: float, series_threshold: float | None = None) -> float:
    """The scan threshold for a scan of `n_slices`: the card's series threshold for a series (more than one slice)
    where the card has one, else its threshold."""
    return float(series_threshold) if series_threshold is not None and n_slices > 1 else float(threshold)


def scan_probability(out: dict, pooling: str) -> torch.Tensor:
    """Per-scan probability from a forward output: 'head' (the scan head) or 'max_slice' (max slice probability),
    or 'mean' of both. Which one is chosen on validation and stored in the model card."""
    head = torch.softmax(out["scan_logits"].float(), -1)[:, 1]
    slice_p = torch.softmax(out["slice_logits"].float(), -1)[..., 1].masked_fill(~out["mask"], 0.0)
    max_slice = slice_p.amax(1)
    if pooling == "head":
        return head
    if pooling == "max_slice":
        return max_slice
    if pooling == "mean":
        return (head + max_slice) / 2
    raise ValueError(f"unknown pooling {pooling!r}")


POOLINGS = ("head", "max_slice", "mean")


def forward_tta(model, x: torch.Tensor, lengths: torch.Tensor, tta: str = "none") -> dict:
    """Forward pass; with tta="hflip" the logits are averaged with those of the left-right mirrored slices (the
    head is roughly symmetric and training already flips, so the mirror is an equally valid view)."""
    out = model(x, lengths)
    if tta == "none":
        return out
    if tta != "hflip":
        raise ValueError(f"unknown test-time augmentation {tta!r}")
    flipped = model(torch.flip(x, dims=[-1]), lengths)
    return {
        "slice_logits": (out["slice_logits"] + flipped["slice_logits"]) / 2,
        "scan_logits": (out["scan_logits"] + flipped["scan_logits"]) / 2,
        "mask": out["mask"],
    }


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def suppress_bone(x: torch.Tensor) -> torch.Tensor:
    """Normalised slices (N x 1 x H x W, `ml.preprocess.normalise`), bone (grey >= BONE_GREY) set to air (grey 0)."""
    grey = (x * NORM_STD + NORM_MEAN) * 255.0
    return torch.where(grey >= BONE_GREY - 0.5, torch.full_like(x, -NORM_MEAN / NORM_STD), x)
