"""NN-2 and NN-3: fully connected ReLU networks on the flattened input (the paper gives no widths).

NN-2 is LeCun et al.'s 300-100 network (784-300-100-10 on MNIST), NN-3 the 500-300-100 extension
with one more hidden layer. Plain layers, no buffers and nothing in-place, so the models work under
``torch.func`` (functional_call, vmap over stacked parameters). They take any input shape, an
image's (C, H, W) or tabular data's (features,): the first layer has prod(input_shape) inputs.
"""

from __future__ import annotations

import math

from torch import nn

NN2_HIDDEN = (300, 100)
NN3_HIDDEN = (500, 300, 100)


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> nn.Module:
    """Flatten (all but the batch dimension), Linear-ReLU per hidden width, a Linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for next_width in hidden:
        layers += [nn.Linear(width, next_width), nn.ReLU()]
        width = next_width
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def nn2(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """NN-2: two hidden layers, 300 and 100 units."""
    return mlp(input_shape, num_classes, NN2_HIDDEN)


def nn3(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """NN-3: three hidden layers, 500, 300 and 100 units."""
    return mlp(input_shape, num_classes, NN3_HIDDEN)
