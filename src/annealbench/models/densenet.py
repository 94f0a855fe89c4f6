"""DenseNet-121 (the paper's "DenseConv") in its CIFAR form: torchvision's DenseNet-BC with
pytorch-cifar's stem.

Growth rate 32, blocks (6, 12, 24, 16), bottleneck 4×growth, compression 0.5: torchvision's
dense blocks and transitions unchanged. The ImageNet stem (7×7 stride-2 convolution, BatchNorm,
ReLU, max pooling) becomes one 3×3 stride-1 convolution to 64 channels, as in pytorch-cifar, so
the blocks see 32, 16, 8 and 4 pixels (the first dense layer's own BatchNorm-ReLU follows it).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.densenet import DenseNet

GROWTH_RATE = 32
BLOCKS = (6, 12, 24, 16)
STEM_WIDTH = 2 * GROWTH_RATE


def densenet121(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """DenseNet-121 (7.0 M parameters for 10 classes)."""
    model = DenseNet(GROWTH_RATE, BLOCKS, STEM_WIDTH, num_classes=num_classes)
    stem = nn.Conv2d(input_shape[0], STEM_WIDTH, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(stem.weight)  # as torchvision's DenseNet initializes its convolutions
    model.features.conv0 = stem
    del model.features.norm0, model.features.relu0, model.features.pool0
    return model
