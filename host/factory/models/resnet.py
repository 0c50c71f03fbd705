"""CIFAR ResNets (He et al. 2016, section 4.2): 3 stages of 2n 3x3 convs, 16/32/64 channels.

Shortcuts that change shape use a 1x1 conv + BN ("option B"). Channel-pruned checkpoints are rebuilt
from these shapes and then resized to their weights (``checkpoint.resize_to_state_dict``). Blocks per
stage can be fewer than the depth says (``blocks``): latency-targeted pruning removes whole residual
blocks, and a checkpoint stores the count per stage (``arch_options``) to rebuild without pickling a module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from host.factory.models.registry import register


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


def blocks_per_stage(depth: int, blocks: Sequence[int] | None, stages: int) -> tuple[int, ...]:
    """``blocks`` checked (the first stage may have none; a later one keeps its downsampling block), else n each."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    if blocks is None:
        return (n,) * stages
    out = tuple(int(b) for b in blocks)
    if len(out) != stages or not all(0 <= b <= n for b in out) or any(b < 1 for b in out[1:]):
        raise ValueError(
            f"blocks per stage must be {stages} counts in 0..{n} (the first may be 0, no other), got {blocks}"
        )
    return out


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        counts = blocks_per_stage(depth, blocks, len(widths))
        self.depth = depth
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers: list[nn.Sequential] = []
        in_ch = widths[0]
        for stage, (width, count) in enumerate(zip(widths, counts, strict=True)):
            stage_blocks: list[nn.Module] = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                stage_blocks.append(BasicBlock(in_ch, width, width, stride))
                in_ch = width
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as identity, which
        # trains faster and a little better (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def arch_options(self) -> dict[str, Any]:
        """What a checkpoint stores besides the weights to rebuild this network: its blocks per stage."""
        return {"blocks": [len(self.layer1), len(self.layer2), len(self.layer3)]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@register("resnet20")
def resnet20(num_classes: int = 10, blocks: Sequence[int] | None = None) -> nn.Module:
    return CifarResNet(20, num_classes, blocks=blocks)


@register("resnet32")
def resnet32(num_classes: int = 10, blocks: Sequence[int] | None = None) -> nn.Module:
    return CifarResNet(32, num_classes, blocks=blocks)


@register("resnet56")
def resnet56(num_classes: int = 10, blocks: Sequence[int] | None = None) -> nn.Module:
    return CifarResNet(56, num_classes, blocks=blocks)
