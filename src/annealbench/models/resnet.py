"""ResNet-18 and ResNet-50 in their CIFAR form: torchvision's ResNet with pytorch-cifar's stem.

The ImageNet stem (7×7 stride-2 convolution, then max pooling) shrinks a 32×32 image to 8×8
before the first block; the CIFAR form uses a 3×3 stride-1 convolution and no pooling, so the
four stages see 32, 16, 8 and 4 pixels. Blocks, widths and initialization are torchvision's
(BasicBlock [2, 2, 2, 2], Bottleneck [3, 4, 6, 3], stride on the 3×3 convolution).
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


def cifar_stem(model: ResNet, in_channels: int) -> ResNet:
    """Swap the ImageNet stem for a 3×3 stride-1 convolution without max pooling."""
    model.conv1 = nn.Conv2d(in_channels, model.bn1.num_features, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def resnet18(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-18 (11.2 M parameters for 10 classes)."""
    return cifar_stem(ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes), input_shape[0])


def resnet50(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-50 (23.5 M parameters for 10 classes)."""
    return cifar_stem(ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes), input_shape[0])
