"""What a run is: :class:`RunConfig`, its one canonical identity and key, and what it yields.

A run has one canonical form, ``RunConfig.to_dict()``, and one key, :func:`run_key`, the
same whether it is computed from a ``RunConfig`` or from the plain dict a store, a worker
pipe or a Ray task carries. Fields in :data:`NOT_IN_IDENTITY` say where a run trains, not
what it is, and are left out of both the identity and the key.

This module imports neither torch nor the data and model layers at import time, so the
store and the report can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from annealbench import methods as methods_mod
from annealbench.errors import ConfigError, MethodError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "INPUT_SCALINGS",
    "SCORE_FRACTION",
    "last_epochs",
    "TUNING_SEED",
    "WEIGHT_DECAY_ON",
    "NOT_IN_IDENTITY",
    "EpochRecord",
    "RunConfig",
    "RunOutcome",
    "RunResult",
    "identity",
    "run_key",
]

#: The paper's protocol: 100 epochs at batch size 128 (section 4.1).
DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = 128
#: Fields that do not change a run's numbers (where it runs): left out of its identity.
NOT_IN_IDENTITY = frozenset({"device"})
#: Fields added after stores and checkpoints existed, with the value that means "as before":
#: at that value they are left out of the identity, so older runs keep their keys.
ADDED_LATER = {
    "validation": None,
    "custom_dataset": None,
    "input_scaling": "standard",
    "weight_decay_on": "all",
    "lr_scale": 1.0,
    "full_epochs": None,
}
#: Seeds from here on are tuning runs (a tuned study's search for each method's peak rate):
#: disjoint from the final trials' seeds 0..trials-1, and left out of its results.
TUNING_SEED = 100_000
#: Readings of what the paper leaves unstated (docs/fidelity.md): run options.
INPUT_SCALINGS = ("standard", "unit")
WEIGHT_DECAY_ON = ("all", "weights")
#: EpochRecord fields that older checkpoints lack (None: the run has no validation split).
OPTIONAL_RECORD_FIELDS = frozenset({"val_loss", "val_acc"})


#: A run's score averages its last 10% of epochs (the paper's "last 10%" statistic).
SCORE_FRACTION = 0.1


def last_epochs(n_epochs: int, fraction: float = SCORE_FRACTION) -> int:
    """How many final epochs a score averages: floor(fraction * n), at least one."""
    if n_epochs < 1:
        raise ValueError(f"a run needs at least one epoch, got {n_epochs}")
    # The small epsilon keeps 0.1 * 30 = 3.0000000000000004 and 0.1 * 70 = 7.000000000000001 exact.
    return max(1, math.floor(n_epochs * fraction + 1e-9))


def identity(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a run (a RunConfig or its dict) that change its numbers."""
    d = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    return {
        k: v
        for k, v in d.items()
        if k not in NOT_IN_IDENTITY and not (k in ADDED_LATER and v == ADDED_LATER[k])
    }


def run_key(config: RunConfig | Mapping[str, Any]) -> str:
    """A stable short hash of :func:`identity`: the same for a RunConfig and its dict."""
    blob = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; a plain value that can be printed and stored.

    ``custom_method`` carries the definition of a user-defined method (see
    :mod:`annealbench.methods`) and ``custom_dataset`` that of a named user dataset (see
    :func:`annealbench.data.define`), so a run can be trained in another process or machine.
    ``validation`` holds out that many training examples (an int) or that fraction of them
    (a float in (0, 1)), the same ones for every run (:func:`annealbench.data.load`); every
    epoch then records validation loss and accuracy beside test.

    Two readings of what the paper does not state (docs/fidelity.md): ``input_scaling``
    ``standard`` (per-channel mean/std) or ``unit`` (inputs in [0, 1]); ``weight_decay_on``
    ``all`` parameters or ``weights`` only (not biases nor other 1-D parameters).

    ``lr_scale`` multiplies the method's whole rate curve (every schedule value, or the
    constant rate of RMSprop/Adam): how a tuned study gives each method its own peak rate.

    ``full_epochs``: this run is a shorter budget (``epochs``) of a run of ``full_epochs``
    (a study's ``budgets``). Its schedule is the whole curve compressed into ``epochs``,
    except warmup-stable-decay, which keeps the full run's warmup and plateau (its trunk)
    and cools down over the last part of the shorter budget, as WSD is used in practice
    (:meth:`annealbench.training.parts.RatePlan.for_run`).
    """

    dataset: str
    model: str
    method: str
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    subset: int | None = None
    step_per: Literal["iteration", "epoch"] = "iteration"
    device: str = "auto"
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    custom_method: dict[str, Any] | None = None
    validation: int | float | None = None
    custom_dataset: dict[str, Any] | None = None
    input_scaling: str = "standard"
    weight_decay_on: str = "all"
    lr_scale: float = 1.0
    full_epochs: int | None = None

    @property
    def budget(self) -> float:
        """The run's length as a percentage of its full budget (100 for a full run)."""
        return 100.0 if self.full_epochs is None else 100.0 * self.epochs / self.full_epochs

    def __post_init__(self) -> None:
        if self.custom_method is None and not methods_mod.is_builtin(self.method):
            try:
                object.__setattr__(self, "custom_method", methods_mod.get(self.method).to_config())
            except MethodError as exc:
                raise ConfigError(str(exc)) from None
        # A dataset defined in this process (annealbench.data.define) travels with the run.
        # Without annealbench.data imported none can be defined: torch stays unimported.
        data_mod = sys.modules.get("annealbench.data")
        if self.custom_dataset is None and data_mod is not None:
            dataset = data_mod.REGISTRY.get(self.dataset)
            if dataset is not None:
                object.__setattr__(self, "custom_dataset", dataset.to_config())

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming every bad field and the valid choices."""
        from annealbench import models as models_mod

        problems = []
        try:
            dataset = self.dataset_spec()
        except ConfigError as exc:  # DataError is a StudyWideError, not a ConfigError
            problems.append(str(exc))
            dataset = None
        try:
            models_mod.spec(self.model)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            self.method_spec()
        except MethodError as exc:
            problems.append(str(exc))
        for name in ("seed", "epochs", "batch_size"):
            value = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        full = self.full_epochs
        if full is not None and (
            isinstance(full, bool) or not isinstance(full, int)
            or not isinstance(self.epochs, int) or full <= self.epochs
        ):  # fmt: skip
            problems.append(
                f"full_epochs must be None or an integer > epochs ({self.epochs!r}), got {full!r}"
            )
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            problems.append(f"subset must be an integer >= 1 or None, got {self.subset!r}")
        if self.step_per not in ("iteration", "epoch"):
            problems.append(f"step_per must be 'iteration' or 'epoch', got {self.step_per!r}")
        for name, valid in (
            ("input_scaling", INPUT_SCALINGS),
            ("weight_decay_on", WEIGHT_DECAY_ON),
        ):
            if getattr(self, name) not in valid:
                problems.append(
                    f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        scale = self.lr_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e6:
            problems.append(f"lr_scale must be a positive number, got {scale!r}")
        if self.validation is not None and dataset is not None:
            from annealbench import data as data_mod

            size = dataset.train_size if self.subset is None else self.subset
            try:
                data_mod.validation_size(self.validation, size)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))

    def dataset_spec(self) -> Any:
        """The run's :class:`~annealbench.data.Dataset` (a user dataset from its definition)."""
        from annealbench import data as data_mod

        if self.custom_dataset is not None:
            return data_mod.from_config(self.custom_dataset)
        return data_mod.spec(self.dataset)

    def method_spec(self) -> methods_mod.Method:
        if self.custom_method is not None:
            return methods_mod.Method.from_config(self.custom_method)
        return methods_mod.get(self.method)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: a plain dict of every field (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; valid: {sorted(known)}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that change a run's numbers."""
        return identity(self)

    def key(self) -> str:
        """A stable short hash of :meth:`identity` (file names, store lookups)."""
        return run_key(self)

    def label(self) -> str:
        """``fashion-mnist/nn2/sig+/seed0``; a dataset file or folder by its name alone."""
        dataset = self.dataset.rstrip("/").rsplit("/", 1)[-1]
        return f"{dataset}/{self.model}/{self.method}/seed{self.seed}"

    def __hash__(self) -> int:  # custom_method is a dict; hash the canonical identity
        return hash((self.key(), self.device))


@dataclass
class EpochRecord:
    """Metrics of one epoch; accuracies in percent, losses per sample."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    wall_time: float
    val_loss: float | None = None  # None: the run has no validation split
    val_acc: float | None = None


@dataclass
class RunResult:
    """A run trained to its end or to divergence."""

    config: RunConfig
    status: Literal["done", "diverged"]
    epochs: list[EpochRecord]
    error: str | None = None
    #: Epochs restored from a checkpoint when this call started (0: trained from scratch).
    resumed_from: int = 0

    @property
    def final(self) -> EpochRecord | None:
        return self.epochs[-1] if self.epochs else None


@dataclass(frozen=True)
class RunOutcome:
    """What a worker reports for one run: picklable, the same from every executor.

    ``status`` is done, diverged or failed. A failed run has ``error`` (one line) and
    ``study_wide`` (its error is one every other run would repeat: the study stops);
    ``epochs`` is None then, and the store keeps what was recorded epoch by epoch.
    ``resumed_from``: the epochs this attempt found in the run's checkpoint.
    """

    status: Literal["done", "diverged", "failed"]
    error: str | None = None
    epochs: tuple[EpochRecord, ...] | None = None
    environment: Mapping[str, Any] | None = None
    study_wide: bool = False
    resumed_from: int = 0

    @classmethod
    def of(cls, result: RunResult, environment: Mapping[str, Any] | None) -> RunOutcome:
        return cls(
            result.status, result.error, tuple(result.epochs), environment,
            resumed_from=result.resumed_from,
        )  # fmt: skip
