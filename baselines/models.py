"""Baseline segmentation networks: 2D U-Net, 2D ResU-Net, 2D DenseU-Net and 3D U-Net, any input size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import MODELS


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module], type[nn.Module]]:
    """(conv, transposed conv, batch norm, dropout) for 2 or 3 spatial dimensions."""
    if dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Dropout2d
    return nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.Dropout3d


class ConvBlock(nn.Module):
    """Two (conv 3 → batch norm → ReLU) layers: the plain U-Net block."""

    def __init__(self, dims: int, in_channels: int, out_channels: int):
        super().__init__()
        conv, _, norm, _ = _layers(dims)
        self.body = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResBlock(nn.Module):
    """Pre-activation-free residual block: two conv/BN layers plus a (1×1 projected) identity, then ReLU."""

    def __init__(self, dims: int, in_channels: int, out_channels: int):
        super().__init__()
        conv, _, norm, _ = _layers(dims)
        self.body = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=1, bias=False), norm(out_channels), nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False), norm(out_channels),
        )
        self.skip = (nn.Identity() if in_channels == out_channels else
                     nn.Sequential(conv(in_channels, out_channels, 1, bias=False), norm(out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x), inplace=True)


class DenseBlock(nn.Module):
    """Dense block: `layers` BN→ReLU→conv layers, each seeing all earlier maps, then a 1×1 transition."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, layers: int = 3):
        super().__init__()
        conv, _, norm, _ = _layers(dims)
        growth = max(out_channels // 2, 4)
        self.layers = nn.ModuleList(
            nn.Sequential(norm(in_channels + i * growth), nn.ReLU(inplace=True),
                          conv(in_channels + i * growth, growth, 3, padding=1, bias=False))
            for i in range(layers)
        )
        total = in_channels + layers * growth
        self.transition = nn.Sequential(norm(total), nn.ReLU(inplace=True), conv(total, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.transition(torch.cat(features, 1))


BLOCKS = {"conv": ConvBlock, "res": ResBlock, "dense": DenseBlock}


class UNet(nn.Module):
    """Encoder-decoder with skip connections.

    dims: 2 or 3 spatial dimensions. in_channels / num_classes: input channels and output logits.
    width: channels of the first level, doubled at each downsampling. depth: number of resolution levels
    (depth 5 = four 2× downsamplings and a bottleneck). dropout: channel dropout before the bottleneck block and
    after it (0.4 by default, as in the classic U-Net). block: "conv", "res" or "dense".
    Any spatial size is accepted: the input is zero-padded to a multiple of 2**(depth-1) and the logits cropped back.
    """

    def __init__(self, dims: int = 2, in_channels: int = 1, num_classes: int = 4, width: int = 32, depth: int = 5,
                 dropout: float = 0.4, block: str = "conv"):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (one downsampling), got {depth}")
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"width must be >= 1 and dropout in [0, 1), got width={width}, dropout={dropout}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        conv, up_conv, _, drop = _layers(dims)
        make = BLOCKS[block]
        self.dims, self.depth = dims, depth
        channels = [width * 2 ** level for level in range(depth)]
        self.encoders = nn.ModuleList(
            make(dims, in_channels if level == 0 else channels[level - 1], channels[level])
            for level in range(depth - 1))
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.drop_in = drop(dropout)
        self.bottleneck = make(dims, channels[-2], channels[-1])
        self.drop_out = drop(dropout)
        self.ups = nn.ModuleList(up_conv(channels[level + 1], channels[level], 2, stride=2)
                                 for level in range(depth - 1))
        self.decoders = nn.ModuleList(make(dims, 2 * channels[level], channels[level]) for level in range(depth - 1))
        self.head = conv(channels[0], num_classes, 1)

    @property
    def divisor(self) -> int:
        """Spatial sizes that need no padding are multiples of this."""
        return 2 ** (self.depth - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [(-n) % self.divisor for n in size]
        if any(pad):
            # F.pad lists the last axis first
            x = F.pad(x, [p for amount in reversed(pad) for p in (0, amount)])
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.drop_out(self.bottleneck(self.drop_in(x)))
        for level in reversed(range(self.depth - 1)):
            x = self.decoders[level](torch.cat([self.ups[level](x), skips[level]], 1))
        x = self.head(x)
        if any(pad):
            x = x[(..., *(slice(0, n) for n in size))]
        return x


def build_model(name: str, width: int = 32, depth: int = 5, *, dropout: float = 0.4, in_channels: int = 1,
                num_classes: int = 4) -> UNet:
    """The network called `name` (one of MODELS) with the given width, depth and dropout."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    block = {"unet2d": "conv", "resunet2d": "res", "denseunet2d": "dense", "unet3d": "conv"}[name]
    return UNet(dims=3 if name == "unet3d" else 2, in_channels=in_channels, num_classes=num_classes, width=width,
                depth=depth, dropout=dropout, block=block)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
