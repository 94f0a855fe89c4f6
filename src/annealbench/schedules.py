"""Learning-rate schedules as pure functions of training progress.

A schedule maps progress ``p`` in [0, 1] (a float or a numpy array) to a learning rate.
There is no hidden state: the rate at step ``k`` of ``T`` is ``schedule(k / T)``, so a
schedule can be evaluated anywhere, plotted, tested by calling it, and resumed exactly.

Every shape is written once against the array API standard, so the same schedule also
takes a torch tensor (on any device, also inside ``torch.compile``) or a JAX array (also
traced, inside ``jax.jit``) and answers in kind: same library, device and dtype. Nothing
branches on the value of ``p``: a piecewise schedule picks its piece with a ``where`` per
boundary. Only concrete numpy input is checked (NaN or outside [0, 1] raises
:class:`ScheduleError`); a tensor or a traced array is clipped into [0, 1] instead, since
checking it would wait for the device or break tracing. For floats and numpy arrays every
rate is bit for bit the rate of the plain numpy implementation this one replaced (lookups
and masks), which the training engine's exact resumes rely on.

Schedules are built from a few shapes (:class:`Constant`, :class:`Linear`,
:class:`Cosine`, :class:`Exponential`, :class:`Sigmoid`, :class:`Polynomial`,
:class:`InverseSqrt`, :class:`Staircase`) and two ways of composing them:
:class:`Sequence` (join schedules in time, each stretched over its own interval) and
:class:`Repeat` (restart a schedule). Warmup is :func:`warmup`, a ``Sequence`` of a
linear ramp and any schedule, written once for every schedule.

:func:`get` returns the paper's schedules (Nakamura et al., Electronics 2021, Fig. 1) and
today's common ones by name; :func:`names` lists them. This module never imports torch or
JAX, and imports ``array_api_compat`` only when a tensor or JAX array first arrives.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import operator
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
    "OneMinusSqrt",
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
    "resolve",
    "check_total_steps",
    "peak_factor",
    "PAPER_SCHEDULES",
    "LR_UP",
    "LR_LOW",
    "WARMUP_FRACTION",
    "WARMUP_LR",
    "WARMUP_START",
    "LOW_FRACTION",
]

# The paper's settings (section 4.1).
LR_UP = 0.1
LR_LOW = 0.001
WARMUP_FRACTION = 0.1
WARMUP_LR = 0.01
#: The warmup's first rate as a fraction of the peak: the paper's 0.01 for lr_up 0.1.
WARMUP_START = 0.1
#: lr_low as a fraction of lr_up when not given: the paper's 0.001 for lr_up 0.1.
LOW_FRACTION = 0.01
SIGMOID_KAPPA = 0.2

#: A float or numpy array; any array-API array (torch, JAX) is taken too.
ArrayLike = float | np.ndarray | Any

#: The array namespace of each foreign array type seen so far (torch.Tensor, jax.Array, JAX
#: tracers): inside torch.compile or jax.jit, finding it is then a plain dict lookup.
_NAMESPACES: dict[type, Any] = {}


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


def _namespace(p: Any) -> Any:
    """The array-API namespace of a non-numpy array ``p``, or None for anything numpy takes.

    ``array_api_compat.array_namespace`` decides, imported here on first use so that numpy
    alone is enough for floats and numpy arrays. Torch tensors go straight to
    ``array_api_compat.torch`` (what ``array_namespace`` returns for them): ``torch.compile``
    would otherwise trace ``array_namespace``'s ``lru_cache`` and warn about it.
    """
    kind = type(p)
    xp = _NAMESPACES.get(kind)
    if xp is not None:
        return xp
    if isinstance(p, (float, int, list, tuple, np.ndarray, np.generic)):
        return None
    if kind.__module__.partition(".")[0] == "torch":
        import array_api_compat.torch as xp
    else:
        try:
            from array_api_compat import array_namespace, is_numpy_namespace

            xp = array_namespace(p)
        except (ImportError, TypeError):  # not an array API array: numpy may still take it
            return None
        if is_numpy_namespace(xp):
            return None
    _NAMESPACES[kind] = xp
    return xp


def _as_progress(p: Any, xp: Any) -> Any:
    """A foreign array as floating progress, clipped into [0, 1] (no check, no sync)."""
    if not xp.isdtype(p.dtype, "real floating"):
        info = xp.__array_namespace_info__()
        p = xp.astype(p, info.default_dtypes()["real floating"])
    return xp.clip(p, 0.0, 1.0)


@dataclass(frozen=True)
class Schedule:
    """Base class: a frozen dataclass whose ``__call__`` maps progress to a learning rate.

    Subclasses implement :meth:`_value` on progress already in [0, 1] (for numpy input a
    float64 array, checked), with array-API operations of the namespace ``xp`` it is given
    (``numpy`` itself for numpy input) and without branching on the values of ``p``.
    """

    def __call__(self, p: ArrayLike) -> ArrayLike:
        """The rate at progress ``p``: a float for a scalar, else an array like ``p``'s.

        A float, an int or a numpy array must lie in [0, 1] (:class:`ScheduleError` if not);
        a torch tensor or a JAX array (traced or not) is clipped into [0, 1] and the rates
        come back in its library, on its device, in its floating dtype (an integer array
        is taken as the library's default float).
        """
        xp = _namespace(p)
        if xp is not None:
            return self._value(_as_progress(p, xp), xp)
        arr = _check_progress(p)
        out = self._value(arr, np)
        if np.ndim(p) == 0:
            return float(out)
        return out

    def _value(self, p: Any, xp: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def start(self) -> float:
        """The rate at p = 0 (where a jump-free warmup ramp arrives)."""
        return float(self._value(np.zeros(()), np))

    @property
    def peak(self) -> float:
        """The schedule's top rate, its ``lr_up`` (where the paper's warmup ramp arrives, and
        what :class:`~annealbench.AnnealingLR` scales to a param group's lr)."""
        raise NotImplementedError  # pragma: no cover - every shape defines it

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

    @property
    def peak(self) -> float:
        return float(self.lr)

    def _value(self, p: Any, xp: Any) -> Any:
        return xp.full_like(p, float(self.lr))


@dataclass(frozen=True)
class _Between(Schedule):
    """A curve from ``lr_start`` at p = 0 to ``lr_end`` at p = 1 (either may be 0)."""

    lr_start: float
    lr_end: float

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start, allow_zero=True)
        _check_rate("lr_end", self.lr_end, allow_zero=True)

    @property
    def peak(self) -> float:
        return float(max(self.lr_start, self.lr_end))


@dataclass(frozen=True)
class Linear(_Between):
    """Straight line from ``lr_start`` (p = 0) to ``lr_end`` (p = 1); rises or falls."""

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_start + (self.lr_end - self.lr_start) * p


@dataclass(frozen=True)
class Cosine(_Between):
    """Half a cosine from ``lr_start`` to ``lr_end`` (Loshchilov & Hutter's annealing)."""

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_end + (self.lr_start - self.lr_end) * 0.5 * (1.0 + xp.cos(xp.pi * p))


@dataclass(frozen=True)
class OneMinusSqrt(_Between):
    """``lr_start + (lr_end - lr_start) * sqrt(p)``: falls fast at first, then flattens (the
    1-sqrt cooldown of Hägele et al. 2024, which beat cosine and linear cooldowns for WSD)."""

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_start + (self.lr_end - self.lr_start) * xp.sqrt(p)


@dataclass(frozen=True)
class Exponential(_Between):
    """Geometric decay: ``lr_start * (lr_end / lr_start) ** p`` (the paper's ``exp``)."""

    def __post_init__(self) -> None:  # a geometric curve cannot reach 0
        _check_rate("lr_start", self.lr_start)
        _check_rate("lr_end", self.lr_end)

    def _value(self, p: Any, xp: Any) -> Any:
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

    @property
    def peak(self) -> float:  # approached at p -> -inf; lr_start is the paper's eta_up
        return float(max(self.lr_start, self.lr_end))

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_end + (self.lr_start - self.lr_end) / (
            1.0 + xp.exp((2.0 * p - 1.0) / self.kappa)
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

    @property
    def peak(self) -> float:
        return float(max(self.lr_start, self.lr_end))

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_end + (self.lr_start - self.lr_end) * (1.0 - p) ** self.power


@dataclass(frozen=True)
class InverseSqrt(Schedule):
    """``lr_start / sqrt(1 + p / timescale)``: the Transformer-style decay after warmup."""

    lr_start: float
    timescale: float = 0.01

    def __post_init__(self) -> None:
        _check_rate("lr_start", self.lr_start)
        _check_rate("timescale", self.timescale)

    @property
    def peak(self) -> float:
        return float(self.lr_start)

    def _value(self, p: Any, xp: Any) -> Any:
        return self.lr_start / xp.sqrt(1.0 + p / self.timescale)


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

    @property
    def peak(self) -> float:
        return max(self.levels)

    def _value(self, p: Any, xp: Any) -> Any:
        # levels[i] where p >= milestones[i - 1]; later milestones overwrite earlier ones.
        out = xp.full_like(p, self.levels[0])
        for milestone, level in zip(self.milestones, self.levels[1:], strict=True):
            out = xp.where(p >= milestone, xp.full_like(p, level), out)
        return out


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

    @property
    def peak(self) -> float:
        return max(part.peak for part in self.parts)

    def _value(self, p: Any, xp: Any) -> Any:
        # Every part on all of p (its own progress clipped into [0, 1]), each taking over
        # from its first boundary on. Flattened, so that numpy computes on 1-d arrays as the
        # masked implementation did, never on numpy scalars, whose ``**`` is libm's pow
        # where arrays may use a vectorised one: the rates stay the same bit for bit.
        shape = p.shape
        flat = xp.reshape(p, (-1,))
        edges = (0.0, *self.boundaries, 1.0)
        out = None
        for i, part in enumerate(self.parts):
            lo, hi = edges[i], edges[i + 1]
            value = part._value(xp.clip((flat - lo) / (hi - lo), 0.0, 1.0), xp)
            out = value if out is None else xp.where(flat >= lo, value, out)
        return xp.reshape(out, shape)


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
        # Computed here, once: numpy inside torch.compile would be traced as tensors.
        object.__setattr__(self, "_edges", tuple(float(b) for b in self._boundaries()))

    @property
    def peak(self) -> float:
        return self.schedule.peak

    def _boundaries(self) -> tuple[float, ...]:
        lengths = np.asarray([self.cycle_mult**i for i in range(self.cycles)], dtype=np.float64)
        return tuple(np.cumsum(lengths)[:-1] / lengths.sum())

    def _value(self, p: Any, xp: Any) -> Any:
        if self.cycles == 1:
            return self.schedule._value(p, xp)
        joined = Sequence((self.schedule,) * self.cycles, self._edges)  # type: ignore[attr-defined]
        return joined._value(p, xp)


def warmup(
    schedule: Schedule,
    fraction: float = WARMUP_FRACTION,
    lr_start: float | None = None,
    lr_peak: float | None = None,
    *,
    start: float = WARMUP_START,
    continuous: bool = False,
) -> Schedule:
    """Prefix ``schedule`` with a linear warmup over the first ``fraction`` of training.

    As the paper describes it, the ramp rises to ``schedule.peak`` (its ``lr_up``) from
    ``start`` times the peak (0.1: the paper's 0.01 for lr_up 0.1), then ``schedule`` runs
    stretched over the rest, at progress ``q = (p - fraction) / (1 - fraction)``.
    ``continuous=True`` ramps to the schedule's own first rate instead (for ``sig``,
    0.0993 rather than 0.1: no step down where the ramp ends). ``lr_start`` and
    ``lr_peak`` set the two ends in absolute rates. ``fraction = 0`` is no warmup.
    """
    fraction = _check_fraction("warmup fraction", fraction, low_open=False, high_open=True)
    if not isinstance(schedule, Schedule):
        raise ScheduleError("warmup needs a Schedule object")
    if fraction == 0:
        return schedule
    top = schedule.peak if lr_peak is None else _check_rate("lr_peak", lr_peak)
    peak = schedule.start if continuous and lr_peak is None else top
    if lr_start is None:
        start = _check_fraction("warmup start", start, low_open=False, high_open=False)
        # top / (1 / start): the paper's 0.1 x 0.1 comes out as exactly 0.01.
        lr_start = top / (1.0 / start) if start > 0 else 0.0
    lr_start = _check_rate("warmup lr_start", lr_start, allow_zero=True)
    if lr_start > peak:
        raise ScheduleError(
            f"the warmup would start at {lr_start:g}, above the rate it warms up to "
            f"({peak:g}); lower warmup_lr (or give warmup_start, a fraction of the peak)"
        )
    return Sequence((Linear(lr_start, peak), schedule), (fraction,))


def resolve(schedule: str | Schedule) -> Schedule:
    """A schedule given by name (:func:`get`, the paper's defaults) or as a Schedule."""
    if isinstance(schedule, str):
        return get(schedule)
    if not isinstance(schedule, Schedule):
        raise ScheduleError(
            "schedule must be a name from annealbench.schedules.names() or a Schedule, "
            f"got {type(schedule).__name__}"
        )
    return schedule


def check_total_steps(total_steps: int) -> int:
    """``total_steps`` checked to be an integer >= 1 (a bool is not one)."""
    try:
        steps = None if isinstance(total_steps, bool) else operator.index(total_steps)
    except TypeError:
        steps = None
    if steps is None or steps < 1:
        raise ScheduleError(f"total_steps must be an integer >= 1, got {total_steps!r}")
    return int(steps)


def peak_factor(schedule: Schedule, peak: float | None) -> float:
    """What ``schedule``'s rates are multiplied by so that its peak becomes ``peak`` (1.0 for
    None): the factor :class:`~annealbench.AnnealingLR` applies to a param group's lr."""
    if peak is None:
        return 1.0
    return _check_rate("peak", peak) / schedule.peak


_SHAPES: dict[str, type[Schedule]] = {
    cls.__name__: cls
    for cls in (
        Constant,
        Linear,
        Cosine,
        OneMinusSqrt,
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


def _bounds(lr_up: float, lr_low: float | None) -> tuple[float, float]:
    """(lr_up, lr_low), lr_low defaulting to LOW_FRACTION of lr_up (the paper's 0.001)."""
    _check_rate("lr_up", lr_up)
    if lr_low is None:
        lr_low = lr_up / (1.0 / LOW_FRACTION)  # 0.1 / 100 is exactly the paper's 0.001
    _check_rate("lr_low", lr_low, allow_zero=True)
    if lr_low > lr_up:
        raise ScheduleError(
            f"lr_low ({lr_low}) is above lr_up ({lr_up}); a decay needs lr_low <= lr_up"
        )
    return float(lr_up), float(lr_low)


def _warmup_to(value: str) -> bool:
    """``warmup_to``: "peak" (the paper: up to lr_up) or "start" (the curve's first rate)."""
    if value not in ("peak", "start"):
        raise ScheduleError(f"warmup_to must be 'peak' or 'start', got {value!r}")
    return value == "start"


def _constant(lr: float) -> Callable[..., Schedule]:
    def make(lr: float = lr) -> Schedule:
        return Constant(lr)

    return make


def _exp(lr_up: float = LR_UP, lr_low: float | None = None) -> Schedule:
    return Exponential(*_bounds(lr_up, lr_low))


def _str(
    lr_up: float = LR_UP,
    levels: tuple[float, ...] | None = None,
    milestones: tuple[float, ...] = (1 / 3, 2 / 3),
) -> Schedule:
    """Staircase; levels default to lr_up, lr_up / 10, lr_up / 100 (0.1, 0.01, 0.001)."""
    _check_rate("lr_up", lr_up)
    if levels is None:
        levels = (lr_up, lr_up / 10, lr_up / 100)
    return Staircase(tuple(levels), tuple(milestones))


def _sig(
    lr_up: float = LR_UP, lr_low: float | None = None, kappa: float = SIGMOID_KAPPA
) -> Schedule:
    return Sigmoid(*_bounds(lr_up, lr_low), kappa)


def _rep(
    lr_up: float = LR_UP, lr_low: float | None = None, kappa: float = SIGMOID_KAPPA,
    cycles: int = 2,
) -> Schedule:  # fmt: skip
    return Repeat(_sig(lr_up, lr_low, kappa), cycles)


def _wsd_parts(
    lr_up: float,
    warmup_fraction: float,
    warmup_start: float,
    warmup_lr: float | None,
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
    return warmup(body, warmup_fraction, warmup_lr, lr_up, start=warmup_start)


def _trap(
    lr_up: float = LR_UP,
    lr_low: float | None = None,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_start: float = WARMUP_START,
    warmup_lr: float | None = None,
    decay_fraction: float = 0.1,
) -> Schedule:
    lr_up, lr_low = _bounds(lr_up, lr_low)
    decay = Linear(lr_up, lr_low)
    return _wsd_parts(lr_up, warmup_fraction, warmup_start, warmup_lr, decay_fraction, decay)


def _with_warmup(base: Callable[..., Schedule]) -> Callable[..., Schedule]:
    """Name factory for ``<name>+``: the base schedule after the paper's 10% warmup."""
    base_params = inspect.signature(base).parameters

    def make(
        warmup_fraction: float = WARMUP_FRACTION,
        warmup_start: float = WARMUP_START,
        warmup_lr: float | None = None,
        warmup_to: str = "peak",
        **kwargs: Any,
    ) -> Schedule:
        continuous = _warmup_to(warmup_to)
        return warmup(
            base(**kwargs), warmup_fraction, warmup_lr, start=warmup_start, continuous=continuous
        )

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("warmup_fraction", keyword, default=WARMUP_FRACTION),
        inspect.Parameter("warmup_start", keyword, default=WARMUP_START),
        inspect.Parameter("warmup_lr", keyword, default=None),
        inspect.Parameter("warmup_to", keyword, default="peak"),
        *(p.replace(kind=keyword) for p in base_params.values()),
    ]
    make.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return make


def _cosine(lr_up: float = LR_UP, lr_low: float | None = None) -> Schedule:
    return Cosine(*_bounds(lr_up, lr_low))


def _linear(lr_up: float = LR_UP, lr_low: float | None = None) -> Schedule:
    return Linear(*_bounds(lr_up, lr_low))


def _poly(lr_up: float = LR_UP, lr_low: float | None = None, power: float = 2.0) -> Schedule:
    return Polynomial(*_bounds(lr_up, lr_low), power)


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
    lr_low: float | None = None,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_start: float = WARMUP_START,
    warmup_lr: float | None = None,
    decay_fraction: float = 0.2,
    cooldown: str = "cosine",
) -> Schedule:
    """Warmup-stable-decay: ramp, a long plateau at lr_up, a short cool-down (``cosine``,
    ``linear`` or ``1-sqrt``) to lr_low over the last ``decay_fraction``."""
    lr_up, lr_low = _bounds(lr_up, lr_low)
    shapes = {"cosine": Cosine, "linear": Linear, "1-sqrt": OneMinusSqrt}
    if cooldown not in shapes:
        raise ScheduleError(f"cooldown must be one of {', '.join(shapes)}, got {cooldown!r}")
    decay = shapes[cooldown](lr_up, lr_low)
    return _wsd_parts(lr_up, warmup_fraction, warmup_start, warmup_lr, decay_fraction, decay)


def _invsqrt(
    lr_up: float = LR_UP,
    timescale: float = 0.01,
    warmup_fraction: float = WARMUP_FRACTION,
    warmup_start: float = WARMUP_START,
    warmup_lr: float | None = None,
) -> Schedule:
    body = InverseSqrt(lr_up, timescale)
    return warmup(body, warmup_fraction, warmup_lr, start=warmup_start)


def _sgdr(
    lr_up: float = LR_UP, lr_low: float | None = None, cycles: int = 3, cycle_mult: float = 2.0
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
    "constant+": _entry(_with_warmup(_constant(LR_UP)), "10% warmup, then constant lr"),
    "linear": _entry(_linear, "linear decay lr_up -> lr_low"),
    "linear+": _entry(_with_warmup(_linear), "10% warmup, then linear decay"),
    "cosine": _entry(_cosine, "cosine annealing lr_up -> lr_low"),
    "cosine+": _entry(_with_warmup(_cosine), "10% warmup, then cosine annealing"),
    "poly": _entry(_poly, "polynomial decay (power 2) lr_up -> lr_low"),
    "onecycle": _entry(_onecycle, "one-cycle: cosine up over 30%, cosine down (Smith)"),
    "wsd": _entry(_wsd, "warmup-stable-decay: 10% warmup, plateau, cooldown over last 20%"),
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

    >>> lr = get("sig+")(0.05)  # halfway up the warmup ramp, from 0.01 to lr_up = 0.1
    >>> round(lr, 5), round(get("sig")(0.0), 5)
    (0.055, 0.09934)
    """
    entry = _lookup(name)
    unknown = sorted(set(overrides) - set(entry.params))
    if unknown:
        accepted = ", ".join(entry.params) or "none"
        raise ScheduleError(
            f"schedule {name!r} takes no setting {', '.join(unknown)}; it accepts: {accepted}"
        )
    return entry.factory(**overrides)
