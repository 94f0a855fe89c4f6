"""``AnnealingLR``: any annealbench schedule as a PyTorch learning-rate scheduler.

As torch's, timm's and Hugging Face's schedulers do, each param group's ``lr`` is the peak
the schedule is scaled to: after ``k`` calls to :meth:`step` a group's rate is
``group_lr * schedule(min(k, total_steps) / total_steps) / schedule.peak``, so
``SGD(lr=0.05)`` with ``sig+`` anneals from 0.05, and two groups at 0.01 and 0.1 keep their
ratio. ``absolute=True`` uses the schedule's own rates instead. The rate is computed in
closed form from the step count: nothing is multiplied step by step, so no rounding
accumulates, resuming from ``state_dict()`` gives exactly the rates of an uninterrupted run,
and a rate another scheduler wrote into the optimizer is overwritten rather than compounded.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from annealbench import schedules
from annealbench.schedules import Schedule, ScheduleError

__all__ = ["AnnealingLR"]


class AnnealingLR(LRScheduler):
    """Anneal each param group's lr along ``schedule``, its lr being the schedule's peak.

    Args:
        optimizer: the wrapped optimizer; each group's ``lr`` when the scheduler is made
            (torch's ``initial_lr``) is the rate the schedule's peak maps to.
        schedule: a schedule name from :func:`annealbench.schedules.names` (paper defaults)
            or a :class:`~annealbench.schedules.Schedule`.
        total_steps: the number of ``step()`` calls that span training: iterations for
            per-step annealing, epochs for per-epoch annealing. Steps past it hold the
            final rate.
        scale: one extra factor for every group, or one per group (default 1.0).
        absolute: use the schedule's own rates (times ``scale``), whatever the groups' lr.

    Example::

        scheduler = AnnealingLR(optimizer, "sig+", total_steps=epochs * len(batches))
        for x, y in batches:
            loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: str | Schedule,
        total_steps: int,
        scale: float | Sequence[float] | None = None,
        last_epoch: int = -1,
        *,
        absolute: bool = False,
    ) -> None:
        if isinstance(schedule, str):
            schedule = schedules.get(schedule)
        if not isinstance(schedule, Schedule):
            raise ScheduleError(
                f"schedule must be a name or an annealbench Schedule, got {type(schedule).__name__}"
            )
        try:
            steps = None if isinstance(total_steps, bool) else operator.index(total_steps)
        except TypeError:
            steps = None
        if steps is None or steps < 1:
            raise ScheduleError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        self.schedule = schedule
        self.total_steps = int(steps)
        self.absolute = bool(absolute)
        self.scale = self._scales(scale, len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

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

    def rate_at(self, step: int) -> float:
        """The unscaled rate after ``step`` calls to ``step()``."""
        return float(self.schedule(min(max(step, 0), self.total_steps) / self.total_steps))

    def factors(self) -> list[float]:
        """Each group's multiplier of the schedule's rate: its lr over the peak, times scale."""
        if self.absolute:
            return list(self.scale)
        peak = self.schedule.peak
        return [(base / peak) * s for base, s in zip(self.base_lrs, self.scale, strict=True)]

    def get_lr(self) -> list[float]:  # type: ignore[override]
        rate = self.rate_at(self.last_epoch)
        return [rate * f for f in self.factors()]

    # LRScheduler.step(epoch) uses this when given an explicit epoch: same closed form.
    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (the schedule as its config), loadable with weights_only=True."""
        return {
            "schedule": self.schedule.to_config(),
            "total_steps": self.total_steps,
            "scale": list(self.scale),
            "absolute": self.absolute,
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count; refuse a state saved for a different schedule."""
        saved = state_dict.get("schedule")
        if saved is not None and saved != self.schedule.to_config():
            raise ScheduleError(
                "this state was saved for a different schedule: "
                f"saved {saved}, this scheduler has {self.schedule.to_config()}"
            )
        if state_dict.get("total_steps", self.total_steps) != self.total_steps:
            raise ScheduleError(
                f"this state was saved with total_steps={state_dict['total_steps']}, "
                f"this scheduler has total_steps={self.total_steps}"
            )
        self.scale = [float(v) for v in state_dict.get("scale", self.scale)]
        self.absolute = bool(state_dict.get("absolute", self.absolute))
        self.base_lrs = [float(v) for v in state_dict.get("base_lrs", self.base_lrs)]
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
