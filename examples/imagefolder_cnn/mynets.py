"""The model: a small CNN for images, ``mynets:build`` in the study file.

annealbench calls ``build(input_shape, num_classes)`` once per run; for images
``input_shape`` is ``(channels, height, width)``, here ``(1, 28, 28)``.
"""

from torch import nn


def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, height, width = input_shape
    # No BatchNorm (it keeps running statistics in buffers): without it annealbench can
    # train several runs of this model at once as one vectorized computation.
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 28x28 -> 14x14
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 14x14 -> 7x7
        nn.Flatten(),
        nn.Linear(32 * (height // 4) * (width // 4), num_classes),
    )
