"""The paper's nine models by name, and users' own models: a registry of constructors.

Shallow models (nn2, nn3, lenet4, vgg9; used on MNIST and Fashion-MNIST) are plain modules without
BatchNorm, buffers or in-place operations, so ``torch.func`` can vmap them. Deep models (vgg19,
resnet18, resnet50, densenet121, googlenet; used on SVHN and CIFAR) are the CIFAR forms of
pytorch-cifar: 32×32 input, a 3×3 stem, no early downsampling. The README's "Models" section
lists each model's layers and exact parameter counts (checked by tests/test_models.py). nn2 and
nn3 flatten their input, so they also take tabular data: ``input_shape`` ``(features,)``.

Three ways to bring your own model, each a factory ``factory(input_shape, num_classes) ->
torch.nn.Module`` (the built-ins' signature; ``input_shape`` is ``(features,)`` for tabular data
or ``(channels, height, width)`` for images, ``num_classes`` >= 2):

1. **An import path** ``package.module:factory`` wherever a model name is accepted (the
   command line's ``--models`` too); ``module:Class.build`` reaches nested attributes. The path
   is the model's identity: it is stored in each run's config, and a spawned worker or a Ray
   worker imports it again, so the module must be importable there (on PYTHONPATH, or in the
   working folder).
2. **An entry point** in the group ``annealbench.models`` of an installed distribution
   (``[project.entry-points."annealbench.models"] tiny = "mypkg.nets:build"``): the model is
   known by the entry point's name in every process of that environment.
3. **In process**, :func:`register` ``(name, factory)``: known by ``name`` in this process
   only (and in spawned children that run the same module-level ``register`` again).

The rules: each call of the factory returns a fresh model with at least one parameter,
initialized from torch's global RNG (so one seed gives one model), mapping a batch
``(batch, *input_shape)`` to float logits ``(batch, num_classes)``. A user model is shallow
(adaptive methods' default lr 1e-3) unless registered with ``deep=True``. It trains in batched
groups (several runs as one vmapped computation) only when :func:`batch_problem` finds none:
no BatchNorm, no buffers, and a forward and backward pass that ``torch.func.vmap`` can run;
otherwise its runs train one at a time. Every mistake (a malformed path, a module that does
not import, a missing attribute, a factory that raises or returns no ``nn.Module``) is a
:class:`~annealbench.errors.ConfigError` naming the model and the fix.

The registry (:func:`names`, :func:`spec`) is the one place a model's name and its paper label
live, and importing it does not import torch: the report reads it cheaply (a user model's spec
imports the user's module, though). :func:`build`, :func:`count_flops` and :func:`batch_problem`
import the model code when called.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from annealbench.errors import ConfigError
from annealbench.models.loading import (
    SHAPE_RULE,
    a_type,
    describe_error,
    is_import_path,
    load_factory,
    reference,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "FlopCount",
    "ModelSpec",
    "batch_problem",
    "build",
    "count_flops",
    "names",
    "reference",
    "register",
    "spec",
    "unregister",
]

CIFAR_SIZE = (32, 32)
ENTRY_POINT_GROUP = "annealbench.models"
BUILTIN, REGISTERED, ENTRY_POINT, IMPORT_PATH = (
    "builtin",
    "registered",
    "entry point",
    "import path",
)


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of annealbench needs to know about a model before building it."""

    name: str  # what runs store: a built-in or registered name, or an import path
    paper_name: str  # as in the paper's tables; a user model's factory or registered name
    deep: bool  # the paper's deep models: adaptive methods use lr 1e-4 for them, 1e-3 otherwise
    has_batchnorm: bool | None  # None: a user model, unknown until built (see batch_problem)
    input_size: tuple[int, int] | None  # the (H, W) it needs; None: any above a small minimum
    description: str
    origin: str = BUILTIN  # "builtin", "registered", "entry point" or "import path"


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
# Built-ins that flatten their input, so they take (features,) as well as (C, H, W).
_FLAT_INPUT = frozenset({"nn2", "nn3"})
# Users' models known by name (register, entry points): name -> (spec, factory).
_USER: dict[str, tuple[ModelSpec, Callable[..., Any]]] = {}
# (name, shape, classes) -> (the factory probed, its batch problem): batch_problem's cache.
_PROBED: dict[tuple[str, tuple[int, ...], int], tuple[Callable[..., Any], str | None]] = {}


def _entry_points() -> list[Any]:
    """The installed entry points of the group (importlib.metadata, imported only here)."""
    import importlib.metadata

    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def names() -> list[str]:
    """The model names: the paper's nine (shallow ones first, in the paper's order), then those
    registered in this process and those of installed entry points. Import paths are not listed."""
    known = [*_REGISTRY, *_USER]
    found = [ep.name for ep in _entry_points() if ":" not in ep.name]
    return known + [name for name in dict.fromkeys(found) if name not in known]


def register(
    name: str,
    factory: Callable[..., Any],
    *,
    deep: bool = False,
    description: str = "",
    replace: bool = False,
) -> ModelSpec:
    """Make ``factory(input_shape, num_classes) -> nn.Module`` a model called ``name`` in this
    process; its spec. ConfigError for a built-in's name, a name with ``:`` or spaces (import
    paths need no registering), a factory that is not callable, or a name registered to another
    factory unless ``replace``."""
    if not isinstance(name, str) or not name or ":" in name or name != "".join(name.split()):
        raise ConfigError(
            f"cannot register model {name!r}: a model name is a non-empty string without ':' or "
            "spaces (an import path package.module:factory is accepted as it is)"
        )
    if name in _REGISTRY:
        raise ConfigError(f"cannot register model {name!r}: it is a built-in model; pick another")
    if not callable(factory):
        raise ConfigError(
            f"cannot register model {name!r}: {type(factory).__name__} is not callable; give a "
            f"{SHAPE_RULE}"
        )
    if name in _USER and _USER[name][1] is not factory and not replace:
        raise ConfigError(
            f"model {name!r} is already registered ({_USER[name][0].description}); "
            "pass replace=True to replace it"
        )
    model_spec = ModelSpec(
        name, name, bool(deep), None, None, description or f"registered model {name}", REGISTERED
    )
    _USER[name] = (model_spec, factory)
    return model_spec


def unregister(name: str) -> None:
    """Forget a model added by :func:`register` or an entry point (a no-op for unknown names);
    an entry point's model comes back on its next lookup."""
    if name in _REGISTRY:
        raise ConfigError(f"cannot unregister {name!r}: it is a built-in model")
    _USER.pop(name, None)


def _from_entry_point(name: str) -> tuple[ModelSpec, Callable[..., Any]] | None:
    """The model an installed entry point calls ``name``, loaded and registered; or None."""
    found = [ep for ep in _entry_points() if ep.name == name]
    if not found:
        return None
    entry = found[0]
    where = f"entry point {name!r} = {entry.value!r} (group {ENTRY_POINT_GROUP})"
    if not entry.attr:
        raise ConfigError(f"model {name!r}: the {where} must name a factory: module:factory")
    try:
        factory = load_factory(f"{entry.module}:{entry.attr}")
    except ConfigError as exc:
        raise ConfigError(f"model {name!r}, from the {where}: {exc}") from None
    model_spec = ModelSpec(
        name, name, False, None, None, f"user model {entry.module}:{entry.attr}", ENTRY_POINT
    )
    _USER[name] = (model_spec, factory)
    return _USER[name]


def _unknown(name: object) -> ConfigError:
    hint = "or give an import path package.module:factory"
    if isinstance(name, str) and "." in name and all(p.isidentifier() for p in name.split(".")):
        module, _, attr = name.rpartition(".")
        hint += f" (did you mean {module}:{attr}?)"
    return ConfigError(f"unknown model {name!r}; valid models: {', '.join(names())}; {hint}")


def _lookup(name: str) -> tuple[ModelSpec, Callable[..., Any] | None]:
    """The spec and, for a user model, its factory (None for a built-in)."""
    if not isinstance(name, str):
        raise _unknown(name)
    if name in _REGISTRY:
        return _REGISTRY[name][0], None
    if is_import_path(name):
        factory = load_factory(name)
        label = getattr(factory, "__name__", None)
        paper_name = label if isinstance(label, str) else name.rpartition(".")[2]
        description = f"user model {name}"
        return ModelSpec(name, paper_name, False, None, None, description, IMPORT_PATH), factory
    found = _USER.get(name) or _from_entry_point(name)
    if found is None:
        raise _unknown(name)
    return found


def spec(name: str) -> ModelSpec:
    """The spec of a model: a built-in, registered or entry point name, or an import path
    ``package.module:factory`` (imported to check it). ConfigError (a ValueError) for an
    unknown name, listing the valid ones, or for an import path that does not lead to a
    callable (the message says why and what to do)."""
    return _lookup(name)[0]


def _shape(name: str, input_shape: Sequence[int], flat_ok: bool) -> tuple[int, ...]:
    """``input_shape`` as a tuple of ints: (C, H, W), or (features,) where ``flat_ok``."""
    try:
        shape = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        shape = ()
    ranks = (1, 3) if flat_ok else (3,)
    if len(shape) in ranks and min(shape) >= 1:
        return shape
    if len(shape) == 1 and min(shape) >= 1:
        raise ConfigError(
            f"{name} is convolutional and needs input_shape (channels, height, width), got "
            f"{input_shape!r}; tabular data takes nn2, nn3 or a user model"
        )
    what = "(features,) or (channels, height, width)" if flat_ok else "(channels, height, width)"
    raise ConfigError(f"input_shape must be {what}, got {input_shape!r}")


def _check_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _build_builtin(name: str, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    model_spec, module, constructor = _REGISTRY[name]
    if model_spec.input_size is not None and shape[1:] != model_spec.input_size:
        need_h, need_w = model_spec.input_size
        channels, height, width = shape
        raise ConfigError(
            f"{name} is the CIFAR form and needs C×{need_h}×{need_w} images (svhn, cifar10, "
            f"cifar100); got {channels}×{height}×{width}"
        )
    family = importlib.import_module(f"annealbench.models.{module}")
    return getattr(family, constructor)(shape, num_classes)


def _call_factory(
    name: str, factory: Callable[..., Any], shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The factory's model, checked: an ``nn.Module`` with parameters."""
    from torch import nn

    try:
        net = factory(shape, num_classes)
    except Exception as exc:  # the user's code: any exception at all
        raise ConfigError(
            f"model {name!r}: the factory raised {describe_error(exc)} when called with "
            f"input_shape={shape}, num_classes={num_classes}"
        ) from exc
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"model {name!r}: the factory returned {a_type(net)}, not a torch.nn.Module; it "
            f"must be a {SHAPE_RULE}"
        )
    if next(iter(net.parameters()), None) is None:
        raise ConfigError(
            f"model {name!r}: the factory returned {a_type(net)} without parameters; "
            "a model needs at least one trainable parameter"
        )
    return net


def build(name: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialized model (draws from torch's global RNG).

    ``input_shape`` is (channels, height, width), or (features,) for nn2, nn3 and user models.
    ConfigError (a ValueError) for an unknown name or bad import path, a malformed shape, fewer
    than 2 classes, an input shape the model cannot take, or a user factory that raises or
    returns something other than an ``nn.Module`` with parameters (the message says which).
    """
    model_spec, factory = _lookup(name)
    shape = _shape(name, input_shape, flat_ok=factory is not None or name in _FLAT_INPUT)
    _check_classes(num_classes)
    if factory is None:
        return _build_builtin(name, shape, num_classes)
    return _call_factory(model_spec.name, factory, shape, num_classes)


def batch_problem(name: str, input_shape: Sequence[int], num_classes: int) -> str | None:
    """None when the model can train in a batched (vmapped) group, else why not, in one line.

    Built-ins are answered from their spec. A user model is built (torch's global RNG is left
    as it was) and must have no BatchNorm and no buffers, and ``torch.func.vmap`` of
    ``grad`` of a cross-entropy loss over ``functional_call`` with two stacked copies of its
    parameters must run on a probe batch of zeros. Answers are cached per (name, shape,
    classes) and factory. ConfigError when the model cannot be built, or its forward pass
    fails or does not give (batch, num_classes) logits.
    """
    model_spec, factory = _lookup(name)
    shape = _shape(name, input_shape, flat_ok=factory is not None or name in _FLAT_INPUT)
    _check_classes(num_classes)
    if factory is None:
        if not model_spec.has_batchnorm:
            return None
        batchable = [n for n, (s, _, _) in _REGISTRY.items() if not s.has_batchnorm]
        return (
            f"{name} has BatchNorm (running statistics are not vmapped); batched training "
            f"takes {', '.join(batchable[:-1])} and {batchable[-1]}"
        )
    key = (name, shape, num_classes)
    cached = _PROBED.get(key)
    if cached is not None and (cached[0] is factory or cached[0] == factory):
        return cached[1]
    import torch

    from annealbench.models import probe

    with torch.random.fork_rng(devices=[]):
        net = _call_factory(name, factory, shape, num_classes)
        problem = probe.batch_problem(name, net, shape, num_classes)
    _PROBED[key] = (factory, problem)
    return problem


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

    The model (a built-in or a user model; ``input_shape`` as :func:`build` takes it) is
    built, in training mode, and run on a batch of two zero inputs with a cross-entropy loss;
    torch's global RNG is left as it was.
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
