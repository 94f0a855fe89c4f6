"""GoogLeNet (Inception v1) in its CIFAR form, as in pytorch-cifar.

A 3×3 stem to 192 channels replaces the ImageNet stem, so the inception stages see 32, 16 and 8
pixels; the nine inception modules keep the paper's widths. As in pytorch-cifar, the 5×5 branch
is two 3×3 convolutions (same receptive field) and every convolution is followed by BatchNorm and
ReLU (torchvision's Conv2dNormActivation). torchvision's own Inception block differs (one 3×3 in
that branch, a known bug kept for its weights), so the block is written here.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

STEM_WIDTH = 192
# (in, 1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool projection), per the GoogLeNet paper's Table 1.
INCEPTION_3 = ((192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64))
INCEPTION_4 = (
    (480, 192, 96, 208, 16, 48, 64),
    (512, 160, 112, 224, 24, 64, 64),
    (512, 128, 128, 256, 24, 64, 64),
    (512, 112, 144, 288, 32, 64, 64),
    (528, 256, 160, 320, 32, 128, 128),
)
INCEPTION_5 = ((832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128))


class Inception(nn.Module):
    """Four parallel branches (1×1; 1×1-3×3; 1×1-3×3-3×3; pool-1×1) concatenated on channels."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = Conv2dNormActivation(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            Conv2dNormActivation(in_channels, ch3x3_reduce, 1),
            Conv2dNormActivation(ch3x3_reduce, ch3x3, 3),
        )
        self.branch3 = nn.Sequential(
            Conv2dNormActivation(in_channels, ch5x5_reduce, 1),
            Conv2dNormActivation(ch5x5_reduce, ch5x5, 3),
            Conv2dNormActivation(ch5x5, ch5x5, 3),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            Conv2dNormActivation(in_channels, pool_proj, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


def googlenet(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """GoogLeNet for C×32×32 inputs (6.2 M parameters for 10 classes)."""
    return nn.Sequential(
        Conv2dNormActivation(input_shape[0], STEM_WIDTH, 3),
        *(Inception(*widths) for widths in INCEPTION_3),
        nn.MaxPool2d(3, stride=2, padding=1),
        *(Inception(*widths) for widths in INCEPTION_4),
        nn.MaxPool2d(3, stride=2, padding=1),
        *(Inception(*widths) for widths in INCEPTION_5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(1024, num_classes),
    )
