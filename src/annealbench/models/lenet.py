"""LeNet-4 (LeCun et al. 1998, section III.C): two convolutions and two fully connected layers.

Widths as in the original: 4 feature maps of 5×5, then 16 of 5×5, a 120-unit layer, the classifier.
The original pads 28×28 digits to 32×32 (here: padding 2 in the first convolution), uses tanh and
trainable subsampling with sparse connections; we use ReLU, 2×2 max pooling and full connections,
the usual modern reading. No BatchNorm, no buffers, nothing in-place (``torch.func`` friendly).
"""

from __future__ import annotations

from torch import nn

CONV_WIDTHS = (4, 16)
HIDDEN = 120
KERNEL = 5


def lenet4(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """LeNet-4 for C×H×W inputs with H, W >= 12 (two 2×2 poolings around a 5×5 convolution)."""
    channels, height, width = input_shape
    # conv1 keeps the size (padding 2); pool halves; conv2 (no padding) takes 4; pool halves.
    out_h, out_w = ((height // 2) - (KERNEL - 1)) // 2, ((width // 2) - (KERNEL - 1)) // 2
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"lenet4 needs images of at least 12×12 pixels (two 2×2 poolings around a 5×5 "
            f"convolution); got {channels}×{height}×{width}"
        )
    first, second = CONV_WIDTHS
    return nn.Sequential(
        nn.Conv2d(channels, first, KERNEL, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, KERNEL),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(second * out_h * out_w, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, num_classes),
    )
