"""The learning-rate range test (Smith 2017; fastai's and PyTorch Lightning's ``lr_find``).

One run per seed trains from its initial weights for ``steps`` optimizer updates, each on the
next mini-batch, while the rate grows by a constant ratio from ``min_lr`` to ``max_lr``
(:func:`sweep_rates`). Each update records the training loss of its batch (taken before the
update, as fastai and Lightning do) and an exponentially smoothed, bias-corrected loss
(:func:`smooth`, beta 0.98 as both do). A seed stops early once its smoothed loss exceeds
:data:`DIVERGE_FACTOR` (4) times its minimum so far, or its loss turns non-finite
(:func:`stop_index`): it diverged.

The test is known to be sensitive to the seed, so it runs several and combines them: the
suggestion is a rule (:data:`RULES`) applied to the median smoothed loss over the seeds, on
the steps every seed reached; each seed's own suggestion is reported beside it, so the
spread shows. The rules:

- ``steepest`` (the default; Lightning's suggestion, fastai's ``steep``): the rate where
  the smoothed loss falls fastest per log-rate step, searched from the first tenth of the
  sweep (skipped: the average is still settling) to the loss's minimum;
- ``minimum`` (fastai's ``minimum``): the rate of the smoothed loss's minimum divided by 10.

The engine builds everything a sweep uses: the data (``training.loop.load_data``), the
initial weights (``training.parts.initial_model``), the method's optimizer and its update
(``training.single.SingleStepper``, which builds it with ``Method.make_optimizer``) and the
batch order (the loop's: one ``randperm`` per epoch from the seed); only the rates differ.
The method's own schedule is replaced by the sweep; its peak (``training.parts.RatePlan``)
is what :func:`hints` expresses the suggestion against.

The arithmetic (:func:`sweep_rates`, :func:`smooth`, :func:`stop_index`, :func:`suggest`,
:func:`combine`) is pure numpy; :func:`run_seed` and :func:`lr_find` import torch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from annealbench import schedules
from annealbench.errors import UsageError
from annealbench.training.config import RunConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from annealbench import data as data_mod

__all__ = [
    "BETA",
    "DIVERGE_FACTOR",
    "MIN_STEPS",
    "RULES",
    "LrFindResult",
    "SeedSweep",
    "check_sweep",
    "combine",
    "figure",
    "hints",
    "lr_find",
    "run_seed",
    "smooth",
    "stop_index",
    "suggest",
    "sweep_rates",
    "write_csv",
]

#: The smoothing of the loss: an exponential moving average, bias-corrected (fastai, Lightning).
BETA = 0.98
#: A seed stops once its smoothed loss exceeds this many times its minimum so far (Lightning's
#: ``early_stop_threshold``, fastai's ``stop_div``).
DIVERGE_FACTOR = 4.0
#: The fewest updates a sweep may have.
MIN_STEPS = 10
#: Each rule: what it does, in one line (printed with the suggestion).
RULES: dict[str, str] = {
    "steepest": "steepest descent of the median smoothed loss (Lightning's suggestion, "
    "fastai's 'steep')",
    "minimum": "rate of the median smoothed loss's minimum / 10 (fastai's 'minimum')",
}


def check_sweep(min_lr: float, max_lr: float, steps: int) -> None:
    """Raise UsageError unless ``min_lr < max_lr`` are positive finite rates and ``steps``
    an integer >= :data:`MIN_STEPS`."""
    for name, value in (("--min-lr", min_lr), ("--max-lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{name} must be a number, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise UsageError(f"{name} must be a positive finite rate, got {value}")
    if min_lr >= max_lr:
        raise UsageError(
            f"--min-lr ({min_lr:g}) must be below --max-lr ({max_lr:g}); the sweep grows the "
            "rate from the one to the other, e.g. --min-lr 1e-5 --max-lr 10"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < MIN_STEPS:
        raise UsageError(f"--steps must be an integer >= {MIN_STEPS}, got {steps!r}")


def sweep_rates(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    """The rate of each of ``steps`` updates: ``min_lr * r ** i`` with the constant ratio
    ``r = (max_lr / min_lr) ** (1 / (steps - 1))``, from ``min_lr`` to exactly ``max_lr``."""
    check_sweep(min_lr, max_lr, steps)
    rates = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))
    rates[0], rates[-1] = min_lr, max_lr
    return rates


def smooth(losses: Sequence[float] | np.ndarray, beta: float = BETA) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses``: with
    ``avg_i = beta * avg_(i-1) + (1 - beta) * loss_i``, value ``i`` is
    ``avg_i / (1 - beta ** (i + 1))`` (so the first value is the first loss). Non-finite
    from the first non-finite loss on."""
    out = np.empty(len(losses))
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1.0 - beta) * float(loss)
        out[i] = avg / (1.0 - beta ** (i + 1))
    return out


def stop_index(
    losses: Sequence[float] | np.ndarray, beta: float = BETA, factor: float = DIVERGE_FACTOR
) -> int | None:
    """The update at which a sweep stops (it is recorded, then the sweep ends): the first whose
    loss is non-finite or whose smoothed loss exceeds ``factor`` times the smallest smoothed
    loss before it; None when the sweep runs to the end."""
    smoothed = smooth(losses, beta)
    best = math.inf
    for i, (loss, value) in enumerate(zip(losses, smoothed, strict=True)):
        if not math.isfinite(float(loss)) or (i > 0 and value > factor * best):
            return i
        best = min(best, value)
    return None


def _finite_prefix(values: np.ndarray) -> int:
    """How many leading values are finite."""
    bad = np.flatnonzero(~np.isfinite(values))
    return int(bad[0]) if bad.size else len(values)


def _skipped(steps: int) -> int:
    """How many first updates the steepest rule skips: a tenth of the sweep (fastai's)."""
    return max(1, steps // 10)


def suggest(
    rates: np.ndarray, smoothed: np.ndarray, rule: str = "steepest", skip: int | None = None
) -> float | None:
    """The rate ``rule`` (a key of :data:`RULES`) picks from a smoothed loss curve over
    ``rates``, looking only at its finite leading part; None when that part is too short.
    ``steepest`` skips the first ``skip`` updates (default: a tenth of ``rates``) and needs
    3 points from there to the minimum."""
    if rule not in RULES:
        raise UsageError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    skip = _skipped(len(rates)) if skip is None else skip
    n = min(_finite_prefix(smoothed), len(rates))
    if n < 3:
        return None
    curve, rates = np.asarray(smoothed[:n], dtype=float), np.asarray(rates[:n], dtype=float)
    lowest = int(np.argmin(curve))
    if lowest == 0:  # the loss never fell below its start
        return None
    if rule == "minimum":
        return float(rates[lowest] / 10.0)
    # The rates are geometric, so a step of the index is a constant step of log(rate).
    if lowest - skip < 2:  # the minimum comes (almost) at once: nothing descends
        return None
    slope = np.gradient(curve[skip : lowest + 1])
    return float(rates[skip + int(np.argmin(slope))])


@dataclass(frozen=True)
class SeedSweep:
    """One seed's sweep: the rate, batch loss and smoothed loss of every update it made."""

    seed: int
    rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    planned: int  # the sweep's length had it not stopped

    @property
    def stopped_early(self) -> bool:
        """Whether the seed diverged before the end of the sweep."""
        return len(self.losses) < self.planned


@dataclass(frozen=True)
class LrFindResult:
    """Every seed's sweep, their median and range, and the suggested rate.

    ``median``, ``low`` and ``high`` are over the seeds that reached each update (NaN past
    the longest); ``common`` updates were reached by every seed, and the suggestion comes
    from the median over those. ``method_peak`` is the method's own peak rate on the model.
    """

    config: RunConfig
    rates: np.ndarray  # the planned sweep
    sweeps: tuple[SeedSweep, ...]
    rule: str
    suggestion: float | None
    per_seed: tuple[float | None, ...]
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray
    common: int
    method_peak: float

    @property
    def rounded(self) -> float | None:
        """The suggestion to two significant digits: a sweep's resolution is coarser."""
        return None if self.suggestion is None else float(_g(self.suggestion))

    def spread(self) -> tuple[float, float] | None:
        """The smallest and largest per-seed suggestion (None when no seed has one)."""
        found = [s for s in self.per_seed if s is not None]
        return (min(found), max(found)) if found else None


def combine(
    config: RunConfig,
    rates: np.ndarray,
    sweeps: Sequence[SeedSweep],
    rule: str = "steepest",
    method_peak: float = math.nan,
) -> LrFindResult:
    """The result of ``sweeps`` over the planned ``rates``: the per-update median and range
    of the smoothed losses over the seeds, the rule's suggestion on the median (over the
    updates every seed reached) and on each seed."""
    if rule not in RULES:
        raise UsageError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    if not sweeps:
        raise UsageError("a range test needs at least one seed")
    table = np.full((len(sweeps), len(rates)), np.nan)
    for row, sweep in enumerate(sweeps):
        table[row, : len(sweep.smoothed)] = np.where(
            np.isfinite(sweep.smoothed), sweep.smoothed, np.nan
        )
    reached = int(max(len(s.smoothed) for s in sweeps))
    common = int(min(_finite_prefix(s.smoothed) for s in sweeps))
    median, low, high = (np.full(len(rates), np.nan) for _ in range(3))
    with warnings.catch_warnings():  # an update only non-finite losses reached stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        median[:reached] = np.nanmedian(table[:, :reached], axis=0)
        low[:reached] = np.nanmin(table[:, :reached], axis=0)
        high[:reached] = np.nanmax(table[:, :reached], axis=0)
    skip = _skipped(len(rates))
    return LrFindResult(
        config=config,
        rates=np.asarray(rates, dtype=float),
        sweeps=tuple(sweeps),
        rule=rule,
        suggestion=suggest(rates[:common], median[:common], rule, skip),
        per_seed=tuple(suggest(s.rates, s.smoothed, rule, skip) for s in sweeps),
        median=median,
        low=low,
        high=high,
        common=common,
        method_peak=float(method_peak),
    )


# --------------------------------------------------------------------------- the sweep


def _batches(
    data: data_mod.DeviceData, batch_size: int, seed: int
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """The next mini-batch, epoch after epoch, drawn as the training loop draws them: one
    ``randperm`` of a CPU generator seeded by ``seed`` per epoch, the last batch possibly
    short, augmented by the dataset's augmentation seeded per (seed, epoch)."""
    import torch

    from annealbench.training.loop import augment_seed

    n = data.train_x.shape[0]
    order_gen = torch.Generator(device="cpu").manual_seed(seed)
    aug_gen = torch.Generator(device=data.train_x.device)
    state = {"epoch": -1, "order": torch.empty(0, dtype=torch.long), "at": n}

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if state["at"] >= n:
            state["epoch"] += 1
            state["order"] = torch.randperm(n, generator=order_gen).to(data.train_x.device)
            state["at"] = 0
            aug_gen.manual_seed(augment_seed(seed, state["epoch"]))
        idx = state["order"][state["at"] : state["at"] + batch_size]
        state["at"] += batch_size
        x, y = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
        if data.spec.augments:
            x = data.spec.augment(x, aug_gen)
        return x, y

    return next_batch


def run_seed(
    config: RunConfig,
    rates: np.ndarray,
    data: data_mod.DeviceData,
    device: torch.device,
    beta: float = BETA,
    factor: float = DIVERGE_FACTOR,
) -> SeedSweep:
    """One seed's sweep (``config.seed``): the engine's initial weights and optimizer update,
    the rate of update ``i`` being ``rates[i]``; stops as :func:`stop_index` says."""
    import torch

    from annealbench.training.parts import initial_model
    from annealbench.training.single import SingleStepper

    spec = data.spec
    with torch.random.fork_rng(devices=[]):  # dropout draws from the seed alone
        torch.manual_seed(config.seed)
        model = initial_model(config, spec.input_shape, spec.num_classes, device)
        stepper = SingleStepper(config, model, device)
        stepper.begin_epoch([[float(r) for r in rates]])
        next_batch = _batches(data, config.batch_size, config.seed)
        losses: list[float] = []
        avg, best = 0.0, math.inf
        for i in range(len(rates)):
            x, y = next_batch()
            loss, _ = stepper.step(i, x.unsqueeze(0), y.unsqueeze(0))
            losses.append(float(loss[0]))
            avg = beta * avg + (1.0 - beta) * losses[-1]  # as smooth() does, one at a time
            value = avg / (1.0 - beta ** (i + 1))
            if not math.isfinite(losses[-1]) or (i > 0 and value > factor * best):
                break
            best = min(best, value)
    done = len(losses)
    return SeedSweep(
        config.seed, np.asarray(rates[:done], dtype=float), np.asarray(losses),
        smooth(losses, beta), len(rates),
    )  # fmt: skip


def lr_find(
    config: RunConfig,
    *,
    seeds: int = 3,
    steps: int = 200,
    min_lr: float = 1e-5,
    max_lr: float = 10.0,
    rule: str = "steepest",
    data_root: str | Path | None = None,
    progress: Callable[[SeedSweep], None] | None = None,
) -> LrFindResult:
    """The range test of ``config``'s dataset, model and method (its optimizer; the sweep
    replaces its schedule) for seeds ``config.seed .. config.seed + seeds - 1``.

    ``config`` sets batch size, subset, device and the other run options; its epochs are
    ignored. ``progress`` is called with each seed's sweep as it ends.
    """
    from annealbench.training.loop import load_data
    from annealbench.training.parts import RatePlan, resolve_device

    rates = sweep_rates(min_lr, max_lr, steps)
    if rule not in RULES:
        raise UsageError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"--seeds must be an integer >= 1, got {seeds!r}")
    config.validate()
    device = resolve_device(config.device)
    data = load_data(config, data_root, device)
    sweeps = []
    for seed in range(config.seed, config.seed + seeds):
        sweep = run_seed(dataclasses.replace(config, seed=seed), rates, data, device)
        sweeps.append(sweep)
        if progress is not None:
            progress(sweep)
    plan = RatePlan.for_run(config, 1)
    peak = plan.schedule.peak * plan.scale
    return combine(config, rates, sweeps, rule, peak)


# --------------------------------------------------------------------------- reporting


def _g(value: float) -> str:
    """Two significant digits: what a rate found this way is worth."""
    return f"{float(f'{value:.2g}'):g}"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _inline(table: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in table.items()) + " }"


def _rate_setting(schedule: str, settings: dict[str, Any], rate: float) -> str | None:
    """The schedule setting that makes ``schedule``'s peak ``rate`` (``lr_up``, else ``lr``)."""
    for key in ("lr_up", "lr"):
        try:
            built = schedules.get(schedule, **{**settings, key: rate})
        except (TypeError, ValueError):
            continue
        if math.isclose(built.peak, rate, rel_tol=1e-9):
            return key
    return None


def hints(result: LrFindResult) -> list[str]:
    """How to use the suggestion: as ``--tune-scales`` around the scale that gives the method's
    curve that peak, and as a methods-file table with that peak."""
    rate = result.rounded
    if rate is None:
        return []
    method = result.config.method_spec()
    name, peak = method.name, result.method_peak
    lines = []
    if math.isfinite(peak) and peak > 0:
        scale = rate / peak
        scales = ",".join(_g(scale * f) for f in (0.5, 1, 2))
        lines.append(
            f"as a scale of {name}'s peak {peak:g}: --tune-scales {scales} "
            f"(around {_g(scale)}x, a peak of {rate:g})"
        )
    table = {"optimizer": method.optimizer}
    if method.schedule is None:
        table["lr"] = rate
    else:
        settings = dict(method.schedule_settings)
        key = _rate_setting(method.schedule, settings, rate)
        if key is None:
            return lines
        table["schedule"] = method.schedule
        table["schedule_settings"] = {**settings, key: rate}  # type: ignore[assignment]
    if method.optimizer_settings:
        table["optimizer_settings"] = dict(method.optimizer_settings)  # type: ignore[assignment]
    lines.append("in a methods file (--methods-file):")
    lines.append(f"  [methods.{json.dumps(f'{name}-lr{rate:g}')}]")
    for key, value in table.items():
        text = _inline(value) if isinstance(value, dict) else _toml(value)
        lines.append(f"  {key} = {text}")
    return lines


def write_csv(result: LrFindResult, path: str | Path) -> None:
    """One row per (seed, update): seed, step, lr, loss, smoothed_loss; then the median and
    the range over the seeds as rows of seed ``median``, ``min`` and ``max``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seed", "step", "lr", "loss", "smoothed_loss"])
        for sweep in result.sweeps:
            for i, (rate, loss, value) in enumerate(
                zip(sweep.rates, sweep.losses, sweep.smoothed, strict=True)
            ):
                writer.writerow([sweep.seed, i, repr(float(rate)), repr(float(loss)),
                                 repr(float(value))])  # fmt: skip
        for label, curve in (("median", result.median), ("min", result.low),
                             ("max", result.high)):  # fmt: skip
            for i in range(_finite_prefix(curve)):
                rate = repr(float(result.rates[i]))
                writer.writerow([label, i, rate, "", repr(float(curve[i]))])


def figure(result: LrFindResult) -> Figure:
    """Smoothed loss against rate (log x): the median over the seeds, their min-max band,
    each seed faintly, the suggestion (a vertical line) and each seed's (ticks at the top)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    ax = fig.subplots()
    reached = _finite_prefix(result.median)
    rates = result.rates[:reached]
    for sweep in result.sweeps:
        ax.plot(sweep.rates, sweep.smoothed, color="0.6", lw=0.6, alpha=0.6)
    ax.fill_between(rates, result.low[:reached], result.high[:reached], color="C0", alpha=0.2,
                    lw=0, label=f"min-max of {len(result.sweeps)} seeds")  # fmt: skip
    ax.plot(rates, result.median[:reached], color="C0", lw=2, label="median smoothed loss")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C3", lw=1.2,
                   label=f"suggestion {_g(result.suggestion)} ({result.rule})")  # fmt: skip
    for value in result.per_seed:
        if value is not None:
            ax.axvline(value, ymin=0.93, ymax=1.0, color="C3", lw=1.0)
    if math.isfinite(result.method_peak):
        ax.axvline(result.method_peak, color="0.3", lw=1, ls="--",
                   label=f"{result.config.method}'s peak {result.method_peak:g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(result.rates[0], result.rates[-1])
    finite = result.low[:reached][np.isfinite(result.low[:reached])]
    if finite.size:  # up to the start's loss and a half: divergence would squash the rest
        top = float(np.nanmax(result.high[: max(1, reached // 2)])) * 1.25
        ax.set_ylim(float(finite.min()) * 0.95, max(top, float(finite.min()) * 1.1))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"training loss (smoothed, beta {BETA})")
    config = result.config
    ax.set_title(f"LR range test: {config.dataset} / {config.model} / {config.method}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
