"""The paper's nine models by name: a registry of constructors, one module per family.

Shallow models (nn2, nn3, lenet4, vgg9; used on MNIST and Fashion-MNIST) are plain modules without
BatchNorm, buffers or in-place operations, so ``torch.func`` can vmap them. Deep models (vgg19,
resnet18, resnet50, densenet121, googlenet; used on SVHN and CIFAR) are the CIFAR forms of
pytorch-cifar: 32×32 input, a 3×3 stem, no early downsampling. docs/models.md lists each model's
layers and parameter counts.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from annealbench.models.densenet import densenet121
from annealbench.models.googlenet import googlenet
from annealbench.models.lenet import lenet4
from annealbench.models.mlp import nn2, nn3
from annealbench.models.resnet import resnet18, resnet50
from annealbench.models.vgg import vgg9, vgg19

__all__ = ["ModelSpec", "build", "names", "spec"]

CIFAR_SIZE = (32, 32)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of annealbench needs to know about a model before building it."""

    name: str
    paper_name: str  # as in the paper's tables
    deep: bool  # the paper's deep models: adaptive methods use lr 1e-4 for them, 1e-3 otherwise
    has_batchnorm: bool
    input_size: tuple[int, int] | None  # the (H, W) it needs; None: any above a small minimum
    description: str


Builder = Callable[[tuple[int, int, int], int], nn.Module]

_REGISTRY: dict[str, tuple[ModelSpec, Builder]] = {
    model_spec.name: (model_spec, builder)
    for model_spec, builder in (
        (ModelSpec("nn2", "NN-2", False, False, None, "MLP, hidden 300-100"), nn2),
        (ModelSpec("nn3", "NN-3", False, False, None, "MLP, hidden 500-300-100"), nn3),
        (ModelSpec("lenet4", "LeNet-4", False, False, None, "conv 4-16 (5×5), fc 120"), lenet4),
        (ModelSpec("vgg9", "VGG-9", False, False, None, "6 conv 32-256, fc 512-512"), vgg9),
        (ModelSpec("vgg19", "VGG-19", True, True, CIFAR_SIZE, "VGG-19-BN, CIFAR form"), vgg19),
        (ModelSpec("resnet18", "ResNet-18", True, True, CIFAR_SIZE, "CIFAR form"), resnet18),
        (ModelSpec("resnet50", "ResNet-50", True, True, CIFAR_SIZE, "CIFAR form"), resnet50),
        (
            ModelSpec("densenet121", "DenseConv", True, True, CIFAR_SIZE, "DenseNet-121, CIFAR"),
            densenet121,
        ),
        (ModelSpec("googlenet", "GoogLeNet", True, True, CIFAR_SIZE, "CIFAR form"), googlenet),
    )
}


def names() -> list[str]:
    """The model names, shallow ones first, in the paper's order."""
    return list(_REGISTRY)


def spec(name: str) -> ModelSpec:
    """The spec of a model; ValueError listing the valid names for an unknown one."""
    try:
        return _REGISTRY[name][0]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(names())}") from None


def build(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialized model for C×H×W inputs (draws from torch's global RNG).

    ValueError for an unknown name, a malformed shape, fewer than 2 classes, or an input shape
    the model cannot take (the message says what it needs).
    """
    model_spec = spec(name)
    try:
        shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    channels, height, width = shape
    if model_spec.input_size is not None and (height, width) != model_spec.input_size:
        need_h, need_w = model_spec.input_size
        raise ValueError(
            f"{name} is the CIFAR form and needs C×{need_h}×{need_w} images (svhn, cifar10, "
            f"cifar100); got {channels}×{height}×{width}"
        )
    return _REGISTRY[name][1](shape, num_classes)
