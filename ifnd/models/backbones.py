"""Encoder backbones: torchvision ResNets and a small, fast CNN for CPU runs.

Every backbone maps images ``[B, 3, H, W]`` to features ``[B, feat_dim]`` (global
average pooled, no classifier).
"""

from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

BACKBONES = ("small_cnn", "resnet18", "resnet50")


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (stride 2 each) and global average pooling.

    About 30x faster than a ResNet-18 at 28-32 px on a CPU, which is what the demo and
    the CPU benchmarks need. Input ``[B, 3, H, W]``, output ``[B, 256]``.
    """

    feat_dim = 256

    def __init__(self, widths: tuple[int, int, int] = (64, 128, 256), norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in widths:
            layers += [
                nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, bias=False),
                norm_layer(norm)(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """``batch``: BatchNorm2d; ``group``: GroupNorm with 32 groups (or fewer for thin layers).

    GroupNorm does not depend on the batch, so results do not change with the number
    of processes a batch is split over (SyncBatchNorm needs CUDA).
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda channels: nn.GroupNorm(min(32, channels // 4), channels)
    raise ValueError(f"unknown norm {norm!r}; use batch or group")


def build_backbone(name: str, cifar_stem: bool = True, norm: str = "batch") -> tuple[nn.Module, int]:
    """Return ``(backbone, feat_dim)`` for ``name`` in :data:`BACKBONES`.

    ``cifar_stem`` replaces a ResNet's 7x7/2 convolution and max-pool by a 3x3/1
    convolution, as is usual for 32 px images. Weights are randomly initialised: no
    download ever happens here.
    """
    if name == "small_cnn":
        return SmallCNN(norm=norm), SmallCNN.feat_dim
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    resnet = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer(norm))
    if cifar_stem:
        resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        resnet.maxpool = nn.Identity()
    feat_dim = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet, feat_dim
