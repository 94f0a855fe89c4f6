"""The paper's 12 training methods, and user-defined ones.

A method is an optimizer plus a learning-rate schedule (section 4.1 of the paper):

- ``0.1``, ``0.01``, ``0.001``, ``exp``, ``str``, ``sig``, ``rep``, ``trap``, ``str+``,
  ``sig+``: SGD with momentum 0.9 and weight decay 5e-4, annealed by the schedule of the
  same name;
- ``rms`` and ``adam``: RMSprop and Adam at a constant rate, 1e-3 for the shallow models
  (nn2, nn3, lenet4, vgg9) and 1e-4 for the deep ones, as the paper tunes them.

Today's baselines (:data:`MODERN_METHODS`, not in the paper), SGD at the paper's momentum,
weight decay and peak 0.1 unless said: ``cosine`` (to 0.001), ``cosine0`` and ``linear0``
(to zero), the same three after the paper's warmup (``cosine+``, ``cosine0+``,
``linear0+``), ``wsd`` (warmup, plateau, 1-sqrt cooldown to zero over the last 20%),
``onecycle``, ``adamw-cosine`` (AdamW, weight decay 0.05, warmup + cosine from 1e-3), and
schedule-free ``sf-sgd`` and ``sf-adamw`` (Defazio et al. 2024, the ``schedulefree``
package: a warmup, then a constant rate; the optimizer averages instead of annealing).

Users add their own with :func:`register` or a TOML file read by :func:`load_file`::

    [methods.cosine-sgd]
    optimizer = "sgd"
    schedule = "cosine+"
    schedule_settings = { lr_up = 0.2 }

    [methods.adamw]
    optimizer = "adamw"
    lr = 3e-4
    optimizer_settings = { weight_decay = 0.05 }
"""

from __future__ import annotations

import inspect
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annealbench import schedules
from annealbench.errors import MethodError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "Method",
    "MethodError",
    "MODERN_METHODS",
    "PAPER_METHODS",
    "SCHEDULE_FREE",
    "OPTIMIZERS",
    "get",
    "names",
    "register",
    "load_file",
    "is_builtin",
]

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
ADAPTIVE_LR_SHALLOW = 1e-3
ADAPTIVE_LR_DEEP = 1e-4

#: Optimizers a method may name, with the settings the paper fixes for them.
OPTIMIZERS: dict[str, dict[str, float]] = {
    "sgd": {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
    "rmsprop": {"weight_decay": WEIGHT_DECAY},
    "adam": {"weight_decay": WEIGHT_DECAY},
    "adamw": {"weight_decay": 0.01},
    # Schedule-free (the schedulefree package): the rate is held, the averaging anneals.
    "sgd-schedulefree": {"momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
    "adamw-schedulefree": {"weight_decay": 0.0},
}
#: Optimizers that keep two points (train and eval): switched to eval before evaluating or
#: saving, to train before stepping (``schedulefree``'s rule).
SCHEDULE_FREE = ("sgd-schedulefree", "adamw-schedulefree")


#: Optimizers whose fused (single-kernel) implementation PyTorch has on CPU and CUDA.
_FUSED = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Method:
    """An optimizer and how its rate moves.

    Attributes:
        name: the user-facing name (``sig+``).
        optimizer: one of :data:`OPTIMIZERS`.
        schedule: a schedule name; ``None`` means a constant rate (``lr`` or the paper's
            shallow/deep rates for adaptive optimizers).
        schedule_settings: overrides for the schedule (``lr_up``, ``kappa``...).
        lr: a constant rate, used when ``schedule`` is ``None``.
        optimizer_settings: overrides of the optimizer's defaults.
        description: one line for listings.
    """

    name: str
    optimizer: str
    schedule: str | None = None
    schedule_settings: Mapping[str, Any] = field(default_factory=dict)
    lr: float | None = None
    optimizer_settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise MethodError("a method needs a non-empty name")
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise MethodError(
                f"method {self.name!r}: unknown optimizer {self.optimizer!r}; "
                f"valid: {', '.join(OPTIMIZERS)}"
            )
        for setting, example in (
            ("schedule_settings", "{ lr_up = 0.2 }"),
            ("optimizer_settings", "{ weight_decay = 0.01 }"),
        ):
            if not isinstance(getattr(self, setting), Mapping):
                raise MethodError(
                    f"method {self.name!r}: {setting} must be a table such as {example}, "
                    f"got {getattr(self, setting)!r}"
                )
        if self.schedule is not None:
            self.schedule_for("nn2")  # fail now, not at training time
        elif self.lr is not None:
            try:
                schedules.Constant(self.lr)
            except schedules.ScheduleError as exc:
                raise MethodError(
                    f"method {self.name!r}: {exc}; give a positive, finite rate such as "
                    "lr = 0.01, or a schedule"
                ) from None
        elif self.optimizer in ("sgd",):
            raise MethodError(f"method {self.name!r}: give a schedule or a constant lr")

    def schedule_for(self, model: str, deep: bool | None = None) -> schedules.Schedule:
        """The rate curve this method uses on ``model`` (deep models change adaptive rates)."""
        if self.schedule is not None:
            try:
                return schedules.get(self.schedule, **dict(self.schedule_settings))
            except (TypeError, ValueError) as exc:  # ScheduleError, or a setting of a bad type
                raise MethodError(f"method {self.name!r}: {exc}") from None
        if self.lr is not None:
            return schedules.Constant(self.lr)
        if deep is None:
            from annealbench import models

            deep = models.spec(model).deep
        return schedules.Constant(ADAPTIVE_LR_DEEP if deep else ADAPTIVE_LR_SHALLOW)

    def make_optimizer(
        self, params: Iterable[torch.Tensor], undecayed: Iterable[torch.Tensor] = ()
    ) -> torch.optim.Optimizer:
        """A fresh optimizer; its rate is set every step by the scheduler. ``undecayed``
        parameters form a second group without weight decay.

        MethodError for settings the optimizer refuses (an unknown name, a negative
        momentum, a non-finite number), naming the settings it takes.
        """
        import torch

        params = list(params)
        settings = {**OPTIMIZERS[self.optimizer], **dict(self.optimizer_settings)}
        cls = _optimizer_class(self.optimizer)
        self._check_settings(settings, cls)
        # One fused kernel per tensor instead of a chain of small ops: the same update
        # (up to rounding), about 10% faster per step for nn2 on the CPU.
        if self.optimizer in _FUSED and "fused" not in settings and "foreach" not in settings:
            settings["fused"] = all(
                p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64)
                for p in params
            )
        undecayed = list(undecayed)
        groups: list[Any] = params
        if undecayed:
            groups = [{"params": params}, {"params": undecayed, "weight_decay": 0.0}]
        try:
            return cls(groups, lr=1.0, **settings)
        except (TypeError, ValueError) as exc:
            raise MethodError(
                f"method {self.name!r}: bad optimizer_settings {dict(self.optimizer_settings)}: "
                f"{exc}; {self.optimizer} takes {', '.join(_settings_of(cls))}"
            ) from None

    def _check_settings(self, settings: Mapping[str, Any], cls: type) -> None:
        """Refuse what torch would accept silently: ``lr`` (set by the schedule) and
        non-finite numbers (a NaN weight decay trains to NaN)."""
        if "lr" in self.optimizer_settings:
            raise MethodError(
                f"method {self.name!r}: optimizer_settings may not set lr (the rate comes "
                "from the method's schedule or lr); give lr = ... or a schedule instead"
            )
        for key, value in settings.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise MethodError(
                    f"method {self.name!r}: optimizer_settings.{key} must be finite, got "
                    f"{value!r}; {self.optimizer} takes {', '.join(_settings_of(cls))}"
                )

    @property
    def schedule_free(self) -> bool:
        """Whether the optimizer keeps a train and an eval point (schedule-free)."""
        return self.optimizer in SCHEDULE_FREE

    def validate(self) -> None:
        """Raise MethodError unless this method can train: its optimizer is built on a probe
        tensor (torch checks every setting) and its schedule for shallow and deep models."""
        import torch

        self.make_optimizer([torch.zeros(1, requires_grad=True)])
        for deep in (False, True):
            self.schedule_for("", deep=deep)

    def to_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "schedule_settings": dict(self.schedule_settings),
            "lr": self.lr,
            "optimizer_settings": dict(self.optimizer_settings),
            "description": self.description,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Method:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(config) - known)
        if unknown:
            raise MethodError(f"unknown method settings {unknown}; valid: {sorted(known)}")
        if "optimizer" not in config:
            raise MethodError(
                f"method {config.get('name')!r} needs an optimizer; give optimizer = one of "
                f"{', '.join(OPTIMIZERS)}"
            )
        return cls(**dict(config))


def _optimizer_class(name: str) -> type:
    """The torch (or schedulefree) optimizer class of an optimizer name."""
    import torch

    if name in SCHEDULE_FREE:
        import schedulefree

        return {"sgd-schedulefree": schedulefree.SGDScheduleFree,
                "adamw-schedulefree": schedulefree.AdamWScheduleFree}[name]  # fmt: skip
    return {
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }[name]


def _settings_of(cls: type) -> list[str]:
    """The keyword settings a torch optimizer class takes (params and lr left out)."""
    parameters = inspect.signature(cls).parameters
    return [name for name in parameters if name not in ("self", "params", "lr")]


def _paper() -> dict[str, Method]:
    out: dict[str, Method] = {}
    for name in ("0.1", "0.01", "0.001", "exp", "str", "sig"):
        out[name] = Method(name, "sgd", name, description=schedules.describe(name))
    out["rms"] = Method("rms", "rmsprop", description="RMSprop, constant 1e-3 (1e-4 deep)")
    out["adam"] = Method("adam", "adam", description="Adam, constant 1e-3 (1e-4 deep)")
    for name in ("rep", "trap", "str+", "sig+"):
        out[name] = Method(name, "sgd", name, description=schedules.describe(name))
    return out


def _modern() -> dict[str, Method]:
    """Today's schedules as built-in methods: SGD with the paper's momentum, weight decay
    and peak rate 0.1 (its warmup where a name ends in +), AdamW, and schedule-free."""
    zero = {"lr_low": 0.0}
    sgd = [
        ("cosine", "cosine", {}, "SGD, cosine annealing 0.1 -> 0.001"),
        ("cosine0", "cosine", zero, "SGD, cosine annealing 0.1 -> 0"),
        ("linear0", "linear", zero, "SGD, linear decay 0.1 -> 0 (Straight to Zero)"),
        ("cosine+", "cosine+", {}, "SGD, 10% warmup, cosine 0.1 -> 0.001"),
        ("cosine0+", "cosine+", zero, "SGD, 10% warmup, cosine 0.1 -> 0"),
        ("linear0+", "linear+", zero, "SGD, 10% warmup, linear 0.1 -> 0"),
        ("wsd", "wsd", {**zero, "cooldown": "1-sqrt"},
         "SGD, warmup-stable-decay: 10% warmup, 0.1, 1-sqrt cooldown to 0 over the last 20%"),
        ("onecycle", "onecycle", {}, "SGD, one-cycle (Smith): cosine up to 0.1 over 30%, down"),
    ]  # fmt: skip
    out = {
        name: Method(name, "sgd", schedule, settings, description=text)
        for name, schedule, settings, text in sgd
    }
    out["adamw-cosine"] = Method(
        "adamw-cosine", "adamw", "cosine+", {"lr_up": 1e-3}, optimizer_settings={"weight_decay":
        0.05}, description="AdamW (weight decay 0.05), 10% warmup, cosine 1e-3 -> 1e-5",
    )  # fmt: skip
    out["sf-sgd"] = Method(
        "sf-sgd", "sgd-schedulefree", "constant+", {"lr": 0.1},
        description="schedule-free SGD (Defazio et al. 2024), 10% warmup to 0.1, then constant",
    )  # fmt: skip
    out["sf-adamw"] = Method(
        "sf-adamw", "adamw-schedulefree", "constant+", {"lr": 1e-3},
        optimizer_settings={"weight_decay": 0.05},
        description="schedule-free AdamW, weight decay 0.05, 10% warmup to 1e-3, then constant",
    )  # fmt: skip
    return out


#: The paper's 12 methods in the column order of its Tables 2 and 3.
PAPER_METHODS: tuple[str, ...] = tuple(_paper())
_BUILTIN: dict[str, Method] = {**_paper(), **_modern()}
#: Built-in methods that are not the paper's: today's baselines.
MODERN_METHODS: tuple[str, ...] = tuple(name for name in _BUILTIN if name not in PAPER_METHODS)
_USER: dict[str, Method] = {}


def names() -> list[str]:
    """The paper's methods in table order, then today's baselines, then user-registered ones."""
    return [*_BUILTIN, *_USER]


def is_builtin(name: str) -> bool:
    return name in _BUILTIN


def get(name: str) -> Method:
    """The method called ``name``."""
    method = _BUILTIN.get(name) or _USER.get(name)
    if method is None:
        raise MethodError(f"unknown method {name!r}; valid methods: {', '.join(names())}")
    return method


def register(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` available by name (in this process)."""
    if method.name in _BUILTIN:
        raise MethodError(f"{method.name!r} is one of the paper's methods; choose another name")
    if method.name in _USER and not replace and _USER[method.name] != method:
        raise MethodError(f"a different method named {method.name!r} is already registered")
    _USER[method.name] = method
    return method


def load_file(path: str | Path) -> list[Method]:
    """Register every ``[methods.NAME]`` table of a TOML file; returns them.

    Every method is checked (:meth:`Method.validate`) before any is registered, so a file
    with one bad definition registers none; MethodError names the file, the method and
    the field.
    """
    path = Path(path)
    doc = _read_methods_file(path)
    tables = doc.get("methods")
    if not isinstance(tables, dict) or not tables:
        raise MethodError(f"methods file {path} has no [methods.NAME] tables")
    loaded = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise MethodError(f"{path}: methods.{name} must be a table")
        try:
            method = Method.from_config({"name": name, **table})
            method.validate()
        except MethodError as exc:
            raise MethodError(f"methods file {path}: {exc}") from None
        loaded.append(method)
    return [register(method, replace=True) for method in loaded]


def _read_methods_file(path: Path) -> dict[str, Any]:
    """The TOML document of a methods file; MethodError for a path that is not a readable UTF-8
    file (a folder, a FIFO, a binary file), checked before anything is read."""
    if not path.exists():
        raise MethodError(f"methods file {path} does not exist")
    if path.is_dir():
        raise MethodError(f"methods file {path} is a folder; give the path of a TOML file")
    if not path.is_file():
        raise MethodError(f"methods file {path} is not a regular file; give a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MethodError(
            f"methods file {path} is not a text file (not UTF-8); give a TOML file with "
            "[methods.NAME] tables"
        ) from None
    except OSError as exc:
        raise MethodError(f"methods file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MethodError(f"methods file {path} is not valid TOML: {exc}") from None
