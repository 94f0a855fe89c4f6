"""``AnnealingLR``: any annealbench schedule as a PyTorch learning-rate scheduler.

The rate after ``k`` calls to :meth:`step` is ``schedule(min(k, total_steps) / total_steps)``
(times a per-group scale), computed in closed form from the step count. Nothing is
multiplied step by step, so no rounding accumulates, resuming from ``state_dict()`` gives
exactly the rates of an uninterrupted run, and a rate another scheduler wrote into the
optimizer is overwritten rather than compounded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from annealbench import schedules
from annealbench.schedules import Schedule, ScheduleError

__all__ = ["AnnealingLR"]


class AnnealingLR(LRScheduler):
    """Set each param group's lr to ``scale[g] * schedule(min(k, total_steps) / total_steps)``.

    Args:
        optimizer: the wrapped optimizer.
        schedule: a schedule name from :func:`annealbench.schedules.names` (paper defaults)
            or a :class:`~annealbench.schedules.Schedule`.
        total_steps: the number of ``step()`` calls that span training: iterations for
            per-step annealing, epochs for per-epoch annealing. Steps past it hold the
            final rate.
        scale: one factor for every group, or one per group (default 1.0).

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
    ) -> None:
        if isinstance(schedule, str):
            schedule = schedules.get(schedule)
        if not isinstance(schedule, Schedule):
            raise ScheduleError(
                f"schedule must be a name or an annealbench Schedule, got {type(schedule).__name__}"
            )
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ScheduleError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        self.schedule = schedule
        self.total_steps = total_steps
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

    def get_lr(self) -> list[float]:  # type: ignore[override]
        rate = self.rate_at(self.last_epoch)
        return [rate * s for s in self.scale]

    # LRScheduler.step(epoch) uses this when given an explicit epoch: same closed form.
    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        """Plain data only (the schedule as its config), loadable with weights_only=True."""
        return {
            "schedule": self.schedule.to_config(),
            "total_steps": self.total_steps,
            "scale": list(self.scale),
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
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
