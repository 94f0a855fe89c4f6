"""The paper's nine models by name: a registry of constructors, one module per family.

Shallow models (nn2, nn3, lenet4, vgg9; used on MNIST and Fashion-MNIST) are plain modules without
BatchNorm, buffers or in-place operations, so ``torch.func`` can vmap them. Deep models (vgg19,
resnet18, resnet50, densenet121, googlenet; used on SVHN and CIFAR) are the CIFAR forms of
pytorch-cifar: 32×32 input, a 3×3 stem, no early downsampling. The README's "Models" section
lists each model's layers and exact parameter counts (checked by tests/test_models.py).

The registry (:func:`names`, :func:`spec`) is the one place a model's name and its paper label
live, and importing it does not import torch: the report reads it cheaply. :func:`build` and
:func:`count_flops` import the model code when called.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["FlopCount", "ModelSpec", "build", "count_flops", "names", "spec"]

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


# name -> (spec, module in annealbench.models that holds its constructor, the constructor).
_REGISTRY: dict[str, tuple[ModelSpec, str, str]] = {
    model_spec.name: (model_spec, module, model_spec.name)
    for model_spec, module in (
        (ModelSpec("nn2", "NN-2", False, False, None, "MLP, hidden 300-100"), "mlp"),
        (ModelSpec("nn3", "NN-3", False, False, None, "MLP, hidden 500-300-100"), "mlp"),
        (ModelSpec("lenet4", "LeNet-4", False, False, None, "conv 4-16 (5×5), fc 120"), "lenet"),
        (ModelSpec("vgg9", "VGG-9", False, False, None, "6 conv 32-256, fc 512-512"), "vgg"),
        (ModelSpec("vgg19", "VGG-19", True, True, CIFAR_SIZE, "VGG-19-BN, CIFAR form"), "vgg"),
        (ModelSpec("resnet18", "ResNet-18", True, True, CIFAR_SIZE, "CIFAR form"), "resnet"),
        (ModelSpec("resnet50", "ResNet-50", True, True, CIFAR_SIZE, "CIFAR form"), "resnet"),
        (
            ModelSpec("densenet121", "DenseConv", True, True, CIFAR_SIZE, "DenseNet-121, CIFAR"),
            "densenet",
        ),
        (ModelSpec("googlenet", "GoogLeNet", True, True, CIFAR_SIZE, "CIFAR form"), "googlenet"),
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
    _, module, constructor = _REGISTRY[name]
    family = importlib.import_module(f"annealbench.models.{module}")
    return getattr(family, constructor)(shape, num_classes)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs per sample of one model on one input shape (matmuls and convolutions)."""

    forward: float
    backward: float  # as executed by autograd (no input gradient for the first layer)

    @property
    def train(self) -> float:
        """The convention for a training step: forward + backward = 3x forward."""
        return 3 * self.forward

    @property
    def executed(self) -> float:
        """What a training step actually computes: forward + backward as executed."""
        return self.forward + self.backward


def count_flops(name: str, input_shape: Sequence[int], num_classes: int) -> FlopCount:
    """Forward and backward FLOPs per sample, counted by torch's ``FlopCounterMode``.

    The model is built, in training mode, and run on a batch of two zero images with a
    cross-entropy loss; torch's global RNG is left as it was.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    samples = 2
    with torch.random.fork_rng(devices=[]):
        net = build(name, input_shape, num_classes)
    x = torch.zeros(samples, *input_shape)
    y = torch.zeros(samples, dtype=torch.long)
    with FlopCounterMode(display=False) as forward:
        out = net(x)
    loss = F.cross_entropy(out, y)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return FlopCount(forward.get_total_flops() / samples, backward.get_total_flops() / samples)
