"""VGG-9 (shallow, for 28×28 grayscale) and VGG-19 (CIFAR form), from one layer-list builder.

VGG-9 is the 9-layer VGG of Wang et al., "Federated Learning with Matched Averaging" (ICLR 2020):
six 3×3 convolutions (32, 64, M, 128, 128, M, 256, 256, M) and three fully connected layers
(512, 512, classes); without its dropout and without BatchNorm, so it stays a plain module for
``torch.func``. VGG-19 is pytorch-cifar's: configuration E with BatchNorm, five poolings bring
32×32 to 1×1, then one linear classifier. Both use He initialization for the convolutions.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

POOL = "M"
VGG9_LAYERS = (32, 64, POOL, 128, 128, POOL, 256, 256, POOL)
VGG9_HIDDEN = (512, 512)
VGG19_LAYERS = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL)
VGG19_LAYERS += (512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL)


def features(layers: tuple[int | str, ...], in_channels: int, batch_norm: bool) -> list[nn.Module]:
    """3×3 convolutions (+BatchNorm) + ReLU for each width, 2×2 max pooling for each POOL."""
    modules: list[nn.Module] = []
    for item in layers:
        if item == POOL:
            modules.append(nn.MaxPool2d(2))
            continue
        # Without BatchNorm: convolution with bias and an out-of-place ReLU (torch.func friendly).
        norm = nn.BatchNorm2d if batch_norm else None
        modules.append(Conv2dNormActivation(in_channels, item, 3, norm_layer=norm, inplace=False))
        in_channels = int(item)
    return modules


def he_init(model: nn.Module) -> nn.Module:
    """He (fan-in) normal convolutions with zero biases; linear layers keep PyTorch's default.

    Without BatchNorm, VGG-9 needs it: torchvision's VGG init (fan-out convolutions, N(0, 0.01)
    linear layers) and PyTorch's default both left the loss at ln 10 for the first updates at
    lr 0.01 and 0.1 on Fashion-MNIST, and He init for the linear layers too diverged at lr 0.1.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def vgg9(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-9 for C×H×W inputs with H, W >= 8 (three 2×2 poolings); 1×28×28 in the paper."""
    channels, height, width = input_shape
    if height < 8 or width < 8:
        raise ValueError(
            f"vgg9 needs images of at least 8×8 pixels (three 2×2 poolings); "
            f"got {channels}×{height}×{width}"
        )
    flat = VGG9_LAYERS[-2] * (height // 8) * (width // 8)
    first, second = VGG9_HIDDEN
    model = nn.Sequential(
        *features(VGG9_LAYERS, channels, batch_norm=False),
        nn.Flatten(),
        nn.Linear(flat, first),
        nn.ReLU(),
        nn.Linear(first, second),
        nn.ReLU(),
        nn.Linear(second, num_classes),
    )
    return he_init(model)


def vgg19(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """VGG-19 with BatchNorm, CIFAR form (C×32×32 in, 512 features into one linear layer)."""
    model = nn.Sequential(
        *features(VGG19_LAYERS, input_shape[0], batch_norm=True),
        nn.Flatten(),
        nn.Linear(512, num_classes),
    )
    return he_init(model)
