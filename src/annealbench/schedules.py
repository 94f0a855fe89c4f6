"""Learning-rate schedules as pure functions of training progress.

A schedule maps progress ``p`` in [0, 1] (a float or a numpy array) to a learning rate.
There is no hidden state: the rate at step ``k`` of ``T`` is ``schedule(k / T)``, so a
schedule can be evaluated anywhere, plotted, tested by calling it, and resumed exactly.

Schedules are built from a few shapes (:class:`Constant`, :class:`Linear`,
:class:`Cosine`, :class:`Exponential`, :class:`Sigmoid`, :class:`Polynomial`,
:class:`InverseSqrt`, :class:`Staircase`) and two ways of composing them:
:class:`Sequence` (join schedules in time, each stretched over its own interval) and
:class:`Repeat` (restart a schedule). Warmup is :func:`warmup`, a ``Sequence`` of a
linear ramp and any schedule, written once for every schedule.

:func:`get` returns the paper's schedules (Nakamura et al., Electronics 2021, Fig. 1) and
today's common ones by name; :func:`names` lists them. This module never imports torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annealbench.errors import ScheduleError

__all__ = [
    "Schedule",
    "ScheduleError",
    "Constant",
    "Linear",
    "Cosine",
    "Exponential",
    "Sigmoid",
    "Polynomial",
    "InverseSqrt",
    "Staircase",
    "Sequence",
    "Repeat",
    "warmup",
    "get",
    "names",
    "describe",
    "from_config",
    "PAPER_SCHEDULES",
    "LR_UP",
    "LR_LOW",
    "WARMUP_FRACTION",
    "WARMUP_LR",
]

# The paper's settings (section 4.1).
LR_UP = 0.1
LR_LOW = 0.001
WARMUP_FRACTION = 0.1
WARMUP_LR = 0.01
SIGMOID_KAPPA = 0.2

ArrayLike = float | np.ndarray


def _check_rate(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ScheduleError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ScheduleError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ScheduleError(f"{name} must be {bound}, got {value}")
    return value


def _check_fraction(name: str, value: float, *, low_open: bool, high_open: bool) -> float:
    value = float(value)
    lo_ok = value > 0 if low_open else value >= 0
    hi_ok = value < 1 if high_open else value <= 1
    if not (math.isfinite(value) and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ScheduleError(f"{name} must lie in {interval}, got {value}")
    return value


def _check_progress(p: ArrayLike) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if np.isnan(arr).any():
        raise ScheduleError("progress p is NaN; it must be a number in [0, 1]")
    if (arr < 0).any() or (arr > 1).any():
        bad = arr[(arr < 0) | (arr > 1)].ravel()[0]
        raise ScheduleError(
            f"progress p must lie in [0, 1] (step / total_steps), got {bad}; "
            "clip the step count to total_steps"
        )
    return arr


@dataclass(frozen=True)
class Schedule:
    """Base class: a frozen dataclass whose ``__call__`` maps progress to a learning rate.

    Subclasses implement :meth:`_value` on a float64 array already checked to be in [0, 1].
    """

    def __call__(self, p: ArrayLike) -> ArrayLike:
        arr = _check_progress(p)
        out = self._value(arr)
        if np.ndim(p) == 0:
            return float(out)
        return out

    def _value(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def start(self) -> float:
        """The rate at p = 0 (where a warmup ramp should arrive)."""
        return float(self._value(np.zeros(())))

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description; :func:`from_config` rebuilds an equal schedule."""
        config: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            config[f.name] = _to_config_value(getattr(self, f.name))
        return config


def _to_config_value(value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.to_config()
    if isinstance(value, tuple):
        return [_to_config_value(v) for v in value]
    return value


def from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule written by :meth:`Schedule.to_config`."""
    config = dict(config)
    type_name = config.pop("type", None)
    cls = _SHAPES.get(type_name)
    if cls is None:
        raise ScheduleError(f"unknown schedule type {type_name!r}; known: {sorted(_SHAPES)}")
    kwargs = {}
    for key, value in config.items():
        if isinstance(value, dict) and "type" in value:
            value = from_config(value)
        elif isinstance(value, list):
            value = tuple(
                from_config(v) if isinstance(v, dict) and "type" in v else v for v in value
            )
        kwargs[key] = value
    return cls(**kwargs)


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Constant(Schedule):
    """The same rate throughout."""

    lr: float

    def __post_init__(self) -> None:
        _check_rate("lr", self.lr)

    def _value(self, p: np.ndarray) -> np.ndarray:
        return np.full_like(p, float(self.lr))


@dataclass(frozen=True)
class _Between(Schedule):
    """A curve from ``lr_start`` at p = 0 to ``lr_end`` at p = 1 (either may be 0)."""

    lr_start: float
    lr_end: float

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start, allow_zero=True)
        _check_rate("lr_end", self.lr_end, allow_zero=True)


@dataclass(frozen=True)
class Linear(_Between):
    """Straight line from ``lr_start`` (p = 0) to ``lr_end`` (p = 1); rises or falls."""

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_start + (self.lr_end - self.lr_start) * p


@dataclass(frozen=True)
class Cosine(_Between):
    """Half a cosine from ``lr_start`` to ``lr_end`` (Loshchilov & Hutter's annealing)."""

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_end + (self.lr_start - self.lr_end) * 0.5 * (1.0 + np.cos(np.pi * p))


@dataclass(frozen=True)
class Exponential(_Between):
    """Geometric decay: ``lr_start * (lr_end / lr_start) ** p`` (the paper's ``exp``)."""

    def __post_init__(self) -> None:  # a geometric curve cannot reach 0
        _check_rate("lr_start", self.lr_start)
        _check_rate("lr_end", self.lr_end)

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_start * (self.lr_end / self.lr_start) ** p


@dataclass(frozen=True)
class Sigmoid(Schedule):
    """Sigmoid decay, the paper's eq. (3):
    ``lr_end + (lr_start - lr_end) / (1 + exp((2p - 1) / kappa))``.

    The paper prints the exponent as ``kappa * (2t - 1)`` with kappa = 1/5; taken literally
    that moves the rate only from about 0.055 to 0.045, while its Figure 1 and its text show
    a smooth decay from lr_up to lr_low. Dividing by kappa (the form used here) gives that
    curve: with kappa = 0.2 the rate runs from 0.0993 at p = 0 to 0.0017 at p = 1.
    """

    lr_start: float
    lr_end: float
    kappa: float = SIGMOID_KAPPA

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start)
        _check_rate("lr_end", self.lr_end, allow_zero=True)
        _check_rate("kappa", self.kappa)

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_end + (self.lr_start - self.lr_end) / (
            1.0 + np.exp((2.0 * p - 1.0) / self.kappa)
        )


@dataclass(frozen=True)
class Polynomial(Schedule):
    """``lr_end + (lr_start - lr_end) * (1 - p) ** power``; power 1 is linear decay."""

    lr_start: float
    lr_end: float
    power: float = 2.0

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start)
        _check_rate("lr_end", self.lr_end, allow_zero=True)
        _check_rate("power", self.power)

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_end + (self.lr_start - self.lr_end) * (1.0 - p) ** self.power


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """``lr_start / sqrt(1 + p / timescale)``: the Transformer-style decay after warmup."""

    lr_start: float
    timescale: float = 0.01

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start)
        _check_rate("timescale", self.timescale)

    def _value(self, p: np.ndarray) -> np.ndarray:
        return self.lr_start / np.sqrt(1.0 + p / self.timescale)


@dataclass(frozen=True)
class Staircase(Schedule):
    """Piecewise constant: ``levels[i]`` from ``milestones[i - 1]`` (inclusive) on.

    The paper's ``str`` is levels (0.1, 0.01, 0.001) with milestones (1/3, 2/3).
    """

    levels: tuple[float, ...]
    milestones: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(float(v) for v in self.levels))
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        if len(self.levels) != len(self.milestones) + 1:
            raise ScheduleError(
                f"a staircase needs one more level than milestones, got {len(self.levels)} "
                f"levels and {len(self.milestones)} milestones"
            )
        for i, level in enumerate(self.levels):
            _check_rate(f"levels[{i}]", level)
        for m in self.milestones:
            _check_fraction("each milestone", m, low_open=True, high_open=True)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ScheduleError(f"milestones must increase strictly, got {self.milestones}")

    def _value(self, p: np.ndarray) -> np.ndarray:
        index = np.searchsorted(np.asarray(self.milestones), p, side="right")
        return np.asarray(self.levels)[index]


# --------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class Sequence(Schedule):
    """Schedules joined in time: ``parts[i]`` runs over ``[boundaries[i-1], boundaries[i])``.

    Each part sees its own progress, rescaled to [0, 1] over its interval, so any schedule
    can be stretched into any window of training. At a boundary the next part starts.
    """

    parts: tuple[Schedule, ...]
    boundaries: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        if not self.parts or not all(isinstance(s, Schedule) for s in self.parts):
            raise ScheduleError("a sequence needs at least one schedule, all Schedule objects")
        if len(self.boundaries) != len(self.parts) - 1:
            raise ScheduleError(
                f"{len(self.parts)} parts need {len(self.parts) - 1} boundaries, "
                f"got {len(self.boundaries)}"
            )
        for b in self.boundaries:
            _check_fraction("each boundary", b, low_open=True, high_open=True)
        if list(self.boundaries) != sorted(set(self.boundaries)):
            raise ScheduleError(f"boundaries must increase strictly, got {self.boundaries}")

    def _value(self, p: np.ndarray) -> np.ndarray:
        edges = np.asarray((0.0, *self.boundaries, 1.0))
        index = np.searchsorted(edges[1:-1], p, side="right")
        out = np.empty_like(p)
        for i, part in enumerate(self.parts):
            mask = index == i
            if mask.any():
                lo, hi = edges[i], edges[i + 1]
                local = np.clip((p[mask] - lo) / (hi - lo), 0.0, 1.0)
                out[mask] = part._value(local)
        return out


@dataclass(frozen=True)
class Repeat(Schedule):
    """Restart ``schedule`` ``cycles`` times; cycle i lasts ``cycle_mult ** i`` units.

    ``cycle_mult = 1`` gives equal cycles (the paper's ``rep``: ``sig`` twice); ``2``
    gives SGDR's doubling periods.
    """

    schedule: Schedule
    cycles: int = 2
    cycle_mult: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, Schedule):
            raise ScheduleError("Repeat needs a Schedule object to repeat")
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) or self.cycles < 1:
            raise ScheduleError(f"cycles must be an integer >= 1, got {self.cycles!r}")
        _check_rate("cycle_mult", self.cycle_mult)

    def _boundaries(self) -> tuple[float, ...]:
        lengths = np.asarray([self.cycle_mult**i for i in range(self.cycles)], dtype=np.float64)
        return tuple(np.cumsum(lengths)[:-1] / lengths.sum())

    def _value(self, p: np.ndarray) -> np.ndarray:
        if self.cycles == 1:
            return self.schedule._value(p)
        joined = Sequence((self.schedule,) * self.cycles, self._boundaries())
        return joined._value(p)


def warmup(
    schedule: Schedule,
    fraction: float = WARMUP_FRACTION,
    lr_start: float = WARMUP_LR,
    lr_peak: float | None = None,
) -> Schedule:
    """Prefix ``schedule`` with a linear warmup over the first ``fraction`` of training.

    The ramp runs from ``lr_start`` to ``lr_peak`` (default: the schedule's own starting
    rate, so the curve is continuous), then ``schedule`` runs stretched over the rest,
    at progress ``q = (p - fraction) / (1 - fraction)``. ``fraction = 0`` is no warmup.
    """
    fraction = _check_fraction("warmup fraction", fraction, low_open=False, high_open=True)
    if not isinstance(schedule, Schedule):
        raise ScheduleError("warmup needs a Schedule object")
    if fraction == 0:
        return schedule
    peak = schedule.start if lr_peak is None else _check_rate("lr_peak", lr_peak)
    ramp = Linear(_check_rate("warmup lr_start", lr_start, allow_zero=True), peak)
    return Sequence((ramp, schedule), (fraction,))


_SHAPES: dict[str, type[Schedule]] = {
    cls.__name__: cls
    for cls in (
        Constant,
        Linear,
        Cosine,
        Exponential,
        Sigmoid,
        Polynomial,
        InverseSqrt,
        Staircase,
        Sequence,
        Repeat,
    )
}


# --------------------------------------------------------------------------- named schedules


def _check_bounds(lr_up: float, lr_low: float) -> None:
    _check_rate("lr_up", lr_up)
    _check_rate("lr_low", lr_low, allow_zero=True)
    if lr_low > lr_up:
        raise ScheduleError(
            f"lr_low ({lr_low}) is above lr_up ({lr_up}); a decay needs lr_low <= lr_up"
        )


def _constant(lr: float) -> Callable[..., Schedule]:
    def make(lr: float = lr) -> Schedule:
        return Constant(lr)

    return make


def _exp(lr_up: float = LR_UP, lr_low: float = LR_LOW) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return Exponential(lr_up, lr_low)


def _str(
    levels: tuple[float, ...] = (0.1, 0.01, 0.001),
    milestones: tuple[float, ...] = (1 / 3, 2 / 3),
) -> Schedule:
    return Staircase(tuple(levels), tuple(milestones))


def _sig(lr_up: float = LR_UP, lr_low: float = LR_LOW, kappa: float = SIGMOID_KAPPA) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return Sigmoid(lr_up, lr_low, kappa)


def _rep(
    lr_up: float = LR_UP, lr_low: float = LR_LOW, kappa: float = SIGMOID_KAPPA, cycles: int = 2
) -> Schedule:
    return Repeat(_sig(lr_up, lr_low, kappa), cycles)


def _wsd_parts(
    lr_up: float,
    lr_low: float,
    warmup_fraction: float,
    warmup_lr: float,
    decay_fraction: float,
    decay: Schedule,
) -> Schedule:
    """Warmup, a stable phase at lr_up, then ``decay`` over the last ``decay_fraction``."""
    _check_fraction("warmup_fraction", warmup_fraction, low_open=False, high_open=True)
    _check_fraction("decay_fraction", decay_fraction, low_open=True, high_open=False)
    if warmup_fraction + decay_fraction > 1:
        raise ScheduleError(
            f"warmup_fraction ({warmup_fraction}) + decay_fraction ({decay_fraction}) exceed 1"
        )
    stable = 1.0 - warmup_fraction - decay_fraction
    if stable <= 0:
        body: Schedule = decay
    else:
        body = Sequence((Constant(lr_up), decay), (stable / (1.0 - warmup_fraction),))
    return warmup(body, warmup_fraction, warmup_lr, lr_up)


def _trap(
    lr_up: float = LR_UP,
    lr_low: float = LR_LOW,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_lr: float = WARMUP_LR,
    decay_fraction: float = 0.1,
) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return _wsd_parts(
        lr_up, lr_low, warmup_fraction, warmup_lr, decay_fraction, Linear(lr_up, lr_low)
    )


def _with_warmup(base: Callable[..., Schedule]) -> Callable[..., Schedule]:
    """Name factory for ``<name>+``: the base schedule after the paper's 10% warmup."""
    base_params = inspect.signature(base).parameters

    def make(
        warmup_fraction: float = WARMUP_FRACTION, warmup_lr: float = WARMUP_LR, **kwargs: Any
    ) -> Schedule:
        return warmup(base(**kwargs), warmup_fraction, warmup_lr)

    params = [
        inspect.Parameter("warmup_fraction", inspect.Parameter.KEYWORD_ONLY, default=0.1),
        inspect.Parameter("warmup_lr", inspect.Parameter.KEYWORD_ONLY, default=0.01),
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in base_params.values()),
    ]
    make.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return make


def _cosine(lr_up: float = LR_UP, lr_low: float = LR_LOW) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return Cosine(lr_up, lr_low)


def _linear(lr_up: float = LR_UP, lr_low: float = LR_LOW) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return Linear(lr_up, lr_low)


def _poly(lr_up: float = LR_UP, lr_low: float = LR_LOW, power: float = 2.0) -> Schedule:
    _check_bounds(lr_up, lr_low)
    return Polynomial(lr_up, lr_low, power)


def _onecycle(
    lr_up: float = LR_UP,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Smith's one-cycle policy with cosine phases (torch.optim.lr_scheduler.OneCycleLR)."""
    _check_rate("lr_up", lr_up)
    pct_start = _check_fraction("pct_start", pct_start, low_open=True, high_open=True)
    lr_start = lr_up / _check_rate("div_factor", div_factor)
    lr_end = lr_start / _check_rate("final_div_factor", final_div_factor)
    return Sequence((Cosine(lr_start, lr_up), Cosine(lr_up, lr_end)), (pct_start,))


def _wsd(
    lr_up: float = LR_UP,
    lr_low: float = LR_LOW,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_lr: float = WARMUP_LR,
    decay_fraction: float = 0.2,
) -> Schedule:
    """Warmup-stable-decay: ramp, a long plateau at lr_up, a short cosine cool-down."""
    _check_bounds(lr_up, lr_low)
    return _wsd_parts(
        lr_up, lr_low, warmup_fraction, warmup_lr, decay_fraction, Cosine(lr_up, lr_low)
    )


def _invsqrt(
    lr_up: float = LR_UP,
    timescale: float = 0.01,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_lr: float = WARMUP_LR,
) -> Schedule:
    return warmup(InverseSqrt(lr_up, timescale), warmup_fraction, warmup_lr)


def _sgdr(
    lr_up: float = LR_UP, lr_low: float = LR_LOW, cycles: int = 3, cycle_mult: float = 2.0
) -> Schedule:
    """SGDR: cosine annealing with warm restarts; each period ``cycle_mult`` times longer."""
    return Repeat(_cosine(lr_up, lr_low), cycles, cycle_mult)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Schedule]
    description: str
    paper: bool = False
    params: tuple[str, ...] = field(default=())


def _entry(factory: Callable[..., Schedule], description: str, paper: bool = False) -> _Entry:
    params = tuple(inspect.signature(factory).parameters)
    return _Entry(factory, description, paper, params)


_REGISTRY: dict[str, _Entry] = {
    "0.1": _entry(_constant(0.1), "constant 0.1 (too large, per the paper)", True),
    "0.01": _entry(_constant(0.01), "constant 0.01", True),
    "0.001": _entry(_constant(0.001), "constant 0.001 (too small, per the paper)", True),
    "exp": _entry(_exp, "exponential decay lr_up -> lr_low", True),
    "str": _entry(_str, "staircase 0.1 / 0.01 / 0.001, drops at 1/3 and 2/3", True),
    "sig": _entry(_sig, "sigmoid decay lr_up -> lr_low, kappa 0.2 (paper eq. 3)", True),
    "rep": _entry(_rep, "sigmoid decay twice, restarting at half of training", True),
    "trap": _entry(_trap, "trapezoid: 10% warmup, lr_up, linear decay over last 10%", True),
    "str+": _entry(_with_warmup(_str), "10% warmup from 0.01, then staircase", True),
    "sig+": _entry(_with_warmup(_sig), "10% warmup from 0.01, then sigmoid (the paper's)", True),
    "constant": _entry(_constant(LR_UP), "constant lr (set lr=...)"),
    "linear": _entry(_linear, "linear decay lr_up -> lr_low"),
    "linear+": _entry(_with_warmup(_linear), "10% warmup, then linear decay"),
    "cosine": _entry(_cosine, "cosine annealing lr_up -> lr_low"),
    "cosine+": _entry(_with_warmup(_cosine), "10% warmup, then cosine annealing"),
    "poly": _entry(_poly, "polynomial decay (power 2) lr_up -> lr_low"),
    "onecycle": _entry(_onecycle, "one-cycle: cosine up over 30%, cosine down (Smith)"),
    "wsd": _entry(_wsd, "warmup-stable-decay: 10% warmup, plateau, cosine over last 20%"),
    "invsqrt": _entry(_invsqrt, "10% warmup, then inverse square root decay"),
    "sgdr": _entry(_sgdr, "cosine with warm restarts, 3 cycles, each twice as long"),
}

#: The paper's schedules in the order of its Figure 1.
PAPER_SCHEDULES: tuple[str, ...] = tuple(name for name, e in _REGISTRY.items() if e.paper)


def names(paper_only: bool = False) -> list[str]:
    """Every schedule name :func:`get` accepts (the paper's first)."""
    return [n for n, e in _REGISTRY.items() if e.paper or not paper_only]


def describe(name: str) -> str:
    """A one-line description of a named schedule."""
    return _lookup(name).description


def _lookup(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ScheduleError(
            f"unknown schedule {name!r}; valid names: {', '.join(_REGISTRY)}"
        ) from None


def get(name: str, **overrides: Any) -> Schedule:
    """The schedule called ``name``, with the paper's defaults unless overridden.

    >>> lr = get("sig+")(0.05)  # halfway up the warmup ramp, from 0.01 to sig's start
    >>> round(lr, 5), round(get("sig")(0.0), 5)
    (0.05467, 0.09934)
    """
    entry = _lookup(name)
    unknown = sorted(set(overrides) - set(entry.params))
    if unknown:
        accepted = ", ".join(entry.params) or "none"
        raise ScheduleError(
            f"schedule {name!r} takes no setting {', '.join(unknown)}; it accepts: {accepted}"
        )
    return entry.factory(**overrides)
