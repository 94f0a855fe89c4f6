"""``AnnealingLR``: any annealbench schedule as a PyTorch learning-rate scheduler.

As torch's, timm's and Hugging Face's schedulers do, each param group's ``lr`` is the peak
the schedule is scaled to: after ``k`` optimizer updates, each followed by a call to
:meth:`~AnnealingLR.step`, a group's rate is
``group_lr * schedule(min(k, total_steps) / total_steps) / schedule.peak``, so
``SGD(lr=0.05)`` with ``sig+`` anneals from 0.05, and two groups at 0.01 and 0.1 keep their
ratio. Each group may follow its own schedule (a list of schedules, one per group).
``absolute=True`` uses the schedules' own rates instead. The rate is computed in closed
form from the step count: nothing is multiplied step by step, so no rounding accumulates,
resuming from ``state_dict()`` gives exactly the rates of an uninterrupted run, and a rate
another scheduler wrote into the optimizer is overwritten rather than compounded.

The step count never runs ahead of the optimizer's updates, so gradient accumulation
cannot stretch or shrink the schedule (see :class:`AnnealingLR`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from annealbench import schedules
from annealbench.schedules import Schedule, ScheduleError

__all__ = ["AnnealingLR"]


class AnnealingLR(LRScheduler):
    """Anneal each param group's lr along a schedule, its lr being the schedule's peak.

    Args:
        optimizer: the wrapped optimizer; each group's ``lr`` when the scheduler is made
            (torch's ``initial_lr``) is the rate the schedule's peak maps to.
        schedule: a schedule name from :func:`annealbench.schedules.names` (paper defaults)
            or a :class:`~annealbench.schedules.Schedule`, for every group; or a list of
            them, one per param group (say ``["cosine", "constant"]`` for a backbone and a
            head).
        total_steps: the number of optimizer updates that span training (with gradient
            accumulation, ``len(loader) // accumulation * epochs``), or of epochs when
            :meth:`step` is called once per epoch. Steps past it hold the final rate.
        scale: one extra factor for every group, or one per group (default 1.0).
        absolute: use the schedules' own rates (times ``scale``), whatever the groups' lr.

    What is counted: the rate is computed from the position
    ``k = min(step() calls, optimizer updates)``: the scheduler counts both, the updates
    with a post-step hook on the optimizer, starting when it is made. In the usual loop
    (``optimizer.step()`` then ``scheduler.step()``) the two are equal and ``k`` is the
    number of ``step()`` calls, as for any torch scheduler. When ``step()`` is called more
    often than ``optimizer.step()`` (per micro-batch under gradient accumulation, or before
    ``optimizer.step()`` instead of after), the position follows the updates, so the rate
    changes only when the weights do and the schedule is neither stretched nor shrunk; this
    warns once (a ``UserWarning`` with both counts and the fix). A ``GradScaler`` that skips
    an update with inf or NaN gradients is counted the same way (the rate waits for the
    update), and so may warn once too. When ``step()`` is called less often than
    ``optimizer.step()`` (per-epoch annealing, ``total_steps`` in epochs), the position is
    the number of ``step()`` calls. A position past ``total_steps`` warns once, with the
    numbers, and holds the final rate. Torch's deprecated ``step(epoch)`` sets the
    ``step()`` count, still capped by the updates. (Accelerate's prepared scheduler calls
    ``step()`` once per process at each update: on several processes the position still
    follows this process's updates, which ``total_steps`` then counts.) ``state_dict()``
    holds both counts, so a resumed run continues from the same position; a state saved
    before the updates were counted resumes with as many updates as ``step()`` calls.

    Example::

        scheduler = AnnealingLR(optimizer, "sig+", total_steps=epochs * len(batches))
        for x, y in batches:
            loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()

    Two groups, each on its own curve; the head's constant rate is its own lr:

    >>> import torch
    >>> backbone, head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
    >>> optimizer = torch.optim.SGD(
    ...     [{"params": backbone.parameters(), "lr": 0.01}, {"params": head.parameters()}],
    ...     lr=0.1,
    ... )
    >>> scheduler = AnnealingLR(optimizer, ["cosine", "constant"], total_steps=4)
    >>> for _ in range(2):
    ...     optimizer.step()
    ...     scheduler.step()
    >>> [round(lr, 6) for lr in scheduler.get_last_lr()]  # halfway down 0.01 -> 0.0001
    [0.00505, 0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: str | Schedule | Sequence[str | Schedule],
        total_steps: int,
        scale: float | Sequence[float] | None = None,
        last_epoch: int = -1,
        *,
        absolute: bool = False,
    ) -> None:
        groups = len(optimizer.param_groups)
        self.per_group = not isinstance(schedule, (str, Schedule)) and isinstance(
            schedule, Sequence
        )
        self.schedules = self._schedules(schedule, groups)
        #: The schedule given: one Schedule, or a tuple of them (one per group).
        self.schedule: Schedule | tuple[Schedule, ...] = (
            tuple(self.schedules) if self.per_group else self.schedules[0]
        )
        self.total_steps = schedules.check_total_steps(total_steps)
        self.absolute = bool(absolute)
        self.scale = self._scales(scale, groups)
        #: Optimizer updates seen (since the scheduler was made, or as resumed). Torch's
        #: first step() in ``__init__`` takes ``last_epoch`` from -1 to 0 (or from a given
        #: ``last_epoch`` to one more), so the updates start at that count.
        self.updates = int(last_epoch) + 1
        self._warned_ahead = False
        self._warned_past = False
        this = weakref.ref(self)

        def count_update(_optimizer: Optimizer, _args: Any, _kwargs: Any) -> None:
            scheduler = this()
            if scheduler is not None:
                scheduler.updates += 1

        handle = optimizer.register_step_post_hook(count_update)
        weakref.finalize(self, handle.remove)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _schedules(schedule: Any, groups: int) -> list[Schedule]:
        if isinstance(schedule, (str, Schedule)):
            given = [schedule] * groups
        elif isinstance(schedule, Sequence):
            given = list(schedule)
            if len(given) != groups:
                raise ScheduleError(
                    f"schedule has {len(given)} entries for {groups} param groups; "
                    "give one schedule for all groups or one per group"
                )
        else:
            given = [schedule]
        try:
            return [schedules.resolve(item) for item in given]
        except ScheduleError as exc:
            raise ScheduleError(f"{exc} (or a list of them, one per param group)") from None

    @staticmethod
    def _scales(scale: float | Sequence[float] | None, groups: int) -> list[float]:
        if scale is None:
            return [1.0] * groups
        values = [scale] * groups if isinstance(scale, (int, float)) else list(scale)
        if len(values) != groups:
            raise ScheduleError(f"scale has {len(values)} entries for {groups} param groups")
        for v in values:
            if not math.isfinite(float(v)) or float(v) <= 0:
                raise ScheduleError(f"every scale must be a finite number > 0, got {v!r}")
        return [float(v) for v in values]

    @property
    def position(self) -> int:
        """The step count the rate is computed from: ``step()`` calls, capped by updates."""
        return min(self.last_epoch, self.updates)

    def rate_at(self, step: int, group: int = 0) -> float:
        """Group ``group``'s unscaled rate at position ``step`` (clipped to [0, total])."""
        progress = min(max(step, 0), self.total_steps) / self.total_steps
        return float(self.schedules[group](progress))

    def factors(self) -> list[float]:
        """Each group's multiplier of its schedule's rate: its lr over the peak, times scale."""
        if self.absolute:
            return list(self.scale)
        return [
            (base / schedule.peak) * s
            for base, schedule, s in zip(self.base_lrs, self.schedules, self.scale, strict=True)
        ]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        k = self.position
        return [self.rate_at(k, i) * f for i, f in enumerate(self.factors())]

    # LRScheduler.step(epoch) uses this when given an explicit epoch: same closed form.
    _get_closed_form_lr = get_lr

    def step(self, epoch: int | None = None) -> None:
        """Advance one step; the rate follows ``min(step() calls, optimizer updates)``."""
        initial = self._step_count == 0  # torch's own first step, in __init__
        super().step(epoch)
        if initial:
            return
        counts = f"step() calls: {self.last_epoch}, optimizer updates: {self.updates}"
        if self.last_epoch > self.updates and not self._warned_ahead:
            self._warned_ahead = True
            warnings.warn(
                f"AnnealingLR.step() has been called more often than optimizer.step() "
                f"({counts}). The rate follows the updates: it is the schedule's at step "
                f"{self.updates} of total_steps={self.total_steps}, so gradient accumulation "
                "cannot stretch the schedule, but a total_steps counted in batches is never "
                "reached. Call scheduler.step() once after each optimizer.step() (not per "
                "micro-batch) and count total_steps in optimizer updates: "
                "len(loader) // accumulation * epochs. (A GradScaler that skips an update on "
                "inf/NaN gradients also does this; then nothing needs fixing.)",
                UserWarning,
                stacklevel=2,
            )
        if self.position > self.total_steps and not self._warned_past:
            self._warned_past = True
            warnings.warn(
                f"AnnealingLR has been stepped past total_steps={self.total_steps} "
                f"({counts}); the final rate holds from here on. If training is meant to run "
                "this long, set total_steps to its number of optimizer updates "
                "(len(loader) // accumulation * epochs), or of epochs when stepping once an "
                "epoch.",
                UserWarning,
                stacklevel=2,
            )

    def _configs(self) -> list[dict[str, Any]]:
        return [schedule.to_config() for schedule in self.schedules]

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (schedules as their configs), loadable with weights_only=True.

        ``schedule`` is one config, or a list of configs for per-group schedules.
        """
        configs = self._configs()
        return {
            "schedule": configs if self.per_group else configs[0],
            "total_steps": self.total_steps,
            "scale": list(self.scale),
            "absolute": self.absolute,
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "updates": self.updates,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step counts; refuse a state saved for other schedules or groups.

        One saved schedule matches per-group schedules that are all that schedule (and
        the reverse), so a state saved before per-group schedules existed still loads.
        """
        groups = len(self.optimizer.param_groups)
        saved_lrs = state_dict.get("base_lrs", self.base_lrs)
        if len(saved_lrs) != groups:
            raise ScheduleError(
                f"this state was saved for {len(saved_lrs)} param groups, "
                f"the optimizer has {groups}"
            )
        saved = state_dict.get("schedule")
        if saved is not None:
            ours = self._configs()
            theirs = [saved] * groups if isinstance(saved, dict) else list(saved)
            if theirs != ours:
                if len(theirs) != groups:
                    detail = f"saved {len(theirs)} schedules for {groups} param groups"
                elif not self.per_group and isinstance(saved, dict):
                    detail = f"saved {saved}, this scheduler has {ours[0]}"
                else:
                    i = next(i for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if a != b)
                    detail = f"param group {i}: saved {theirs[i]}, this scheduler has {ours[i]}"
                raise ScheduleError(f"this state was saved for a different schedule: {detail}")
        if state_dict.get("total_steps", self.total_steps) != self.total_steps:
            raise ScheduleError(
                f"this state was saved with total_steps={state_dict['total_steps']}, "
                f"this scheduler has total_steps={self.total_steps}"
            )
        self.scale = [float(v) for v in state_dict.get("scale", self.scale)]
        self.absolute = bool(state_dict.get("absolute", self.absolute))
        self.base_lrs = [float(v) for v in saved_lrs]
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        self.updates = int(state_dict.get("updates", self.last_epoch))
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
