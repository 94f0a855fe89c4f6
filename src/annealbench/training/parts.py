"""What every run is built from, whether it trains alone or in a group.

- :func:`resolve_device`: where it trains;
- :func:`initial_model`: its initial weights, from its seed alone (paired trials);
- :class:`RatePlan`: its learning rate after any number of optimizer updates, in closed form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from annealbench import models as models_mod
from annealbench import schedules
from annealbench.errors import ConfigError
from annealbench.schedules import Schedule
from annealbench.training.config import RunConfig

__all__ = ["RatePlan", "initial_model", "resolve_device", "steps_per_epoch"]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return dev


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer updates in one epoch (the last batch may be short)."""
    return math.ceil(train_size / batch_size)


def updates_per_epoch(config: RunConfig) -> int:
    """The run's optimizer updates per epoch, from its dataset's facts (no data loaded):
    its training images (``subset``), less its validation split, in batches."""
    from annealbench import data

    size = config.subset or config.dataset_spec().train_size
    if config.validation is not None:
        size -= data.validation_size(config.validation, size)
    return steps_per_epoch(size, config.batch_size)


def initial_model(
    config: RunConfig, input_shape: tuple[int, ...], num_classes: int, device: torch.device
) -> torch.nn.Module:
    """The run's model with its initial weights: the same seed gives the same weights,
    whatever the method, so the methods of one trial start from one point."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = models_mod.build(config.model, input_shape, num_classes)
        except ValueError as exc:
            raise ConfigError(
                f"model {config.model!r} does not fit {config.dataset}: {exc}"
            ) from None
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def decayed_first(config: RunConfig, params: list[torch.Tensor]) -> tuple[list[int], int]:
    """The order torch's optimizer of the run holds ``params`` in, and how many of them
    (first) are decayed. ``weight_decay_on="weights"`` decays matrices and kernels only:
    biases and other 1-D parameters go to a second group without weight decay."""
    if config.weight_decay_on == "weights":
        decayed = [i for i, p in enumerate(params) if p.dim() > 1]
        rest = [i for i, p in enumerate(params) if p.dim() <= 1]
        return decayed + rest, len(decayed)
    return list(range(len(params))), len(params)


def run_optimizer(config: RunConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The run's torch optimizer over ``params``, with its weight-decay groups."""
    order, n_decayed = decayed_first(config, params)
    return config.method_spec().make_optimizer(
        [params[i] for i in order[:n_decayed]], undecayed=[params[i] for i in order[n_decayed:]]
    )


@dataclass(frozen=True)
class RatePlan:
    """A run's learning rate after ``k`` optimizer updates: ``schedule(progress(k))``.

    The schedule advances in units of ``updates_per_unit`` updates: 1 anneals every
    iteration, an epoch's worth anneals once per epoch (``step_per="epoch"``). This is the
    one place the unit is decided; the loop only counts updates.
    """

    schedule: Schedule
    total_units: int
    updates_per_unit: int
    scale: float = 1.0  # the run's lr_scale: the whole curve multiplied
    #: A shorter budget of warmup-stable-decay: the full run's plan (the trunk), followed
    #: up to unit ``cooldown_from``; then ``schedule`` is the cooldown alone, over the rest.
    trunk: RatePlan | None = None
    cooldown_from: int = 0

    @classmethod
    def for_run(cls, config: RunConfig, updates_per_epoch: int) -> RatePlan:
        deep = models_mod.spec(config.model).deep
        method = config.method_spec()
        schedule = method.schedule_for(config.model, deep)
        scale = float(config.lr_scale)
        per_iteration = config.step_per == "iteration"
        units = config.epochs * updates_per_epoch if per_iteration else config.epochs
        per_unit = 1 if per_iteration else updates_per_epoch
        if config.full_epochs is not None and method.schedule == "wsd":
            whole = dataclasses.replace(config, full_epochs=None, epochs=config.full_epochs)
            full = cls.for_run(whole, updates_per_epoch)
            return cls._wsd_budget(method, full, units, per_unit, scale)
        return cls(schedule, units, per_unit, scale)

    @classmethod
    def _wsd_budget(
        cls, method: Any, full: RatePlan, units: int, per_unit: int, scale: float
    ) -> RatePlan:
        """WSD at a shorter budget: the full run's warmup and plateau up to where this
        budget's cooldown (the last ``decay_fraction`` of it) starts, so the two runs share
        every rate before it exactly and the shorter one can branch from the longer one."""
        settings = dict(method.schedule_settings)
        decay_fraction = float(settings.get("decay_fraction", 0.2))
        warmup = float(settings.get("warmup_fraction", schedules.WARMUP_FRACTION))
        cooldown = schedules.get("wsd", **{**settings, "warmup_fraction": 0.0,
                                           "decay_fraction": 1.0})  # fmt: skip
        start = math.ceil((1.0 - decay_fraction) * units - 1e-9)  # first unit of the cooldown
        if start < math.ceil(warmup * full.total_units - 1e-9):
            raise ConfigError(
                f"method {method.name!r}: at {units} of {full.total_units} units the cooldown "
                f"would start during the full run's warmup; use a longer budget"
            )
        if start >= units:
            raise ConfigError(
                f"method {method.name!r}: {units} units are too few for a cooldown over their "
                f"last {decay_fraction:g}; use a longer budget"
            )
        return cls(cooldown, units, per_unit, scale, trunk=full, cooldown_from=start)

    def rate(self, updates: int) -> float:
        """The rate of the update that follows ``updates`` earlier ones."""
        unit = min(max(updates, 0) // self.updates_per_unit, self.total_units)
        if self.trunk is not None:
            if unit < self.cooldown_from:
                return self.trunk.rate(updates)
            span = self.total_units - self.cooldown_from
            rate = float(self.schedule((unit - self.cooldown_from) / span))
        else:
            rate = float(self.schedule(unit / self.total_units))
        return rate if self.scale == 1.0 else rate * self.scale

    def shared_updates(self) -> int:
        """How many leading updates take exactly the full run's rates: a shorter WSD
        budget shares its trunk's (0 for every other plan)."""
        return 0 if self.trunk is None else self.cooldown_from * self.updates_per_unit

    def rates(self, updates: int, count: int) -> list[float]:
        """The rates of the next ``count`` updates."""
        return [self.rate(updates + i) for i in range(count)]
