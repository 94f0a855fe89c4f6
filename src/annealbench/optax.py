"""Any annealbench schedule as an optax schedule: a function of the update count.

:func:`schedule` returns ``count -> rate``, what optax takes wherever a learning rate may
be a schedule (``optax.sgd(learning_rate=...)``, ``optax.inject_hyperparams``). The update
that follows ``count`` earlier ones gets ``schedule(min(count, total_steps) / total_steps)``,
as with :class:`~annealbench.AnnealingLR`: the first update runs at the schedule's
``p = 0`` rate, and counts past ``total_steps`` hold the final rate. The rate is computed in
closed form from the count with jax.numpy, so it works on a traced count inside
``jax.jit`` and comes back as a JAX array (float32 unless JAX's x64 mode is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from annealbench import schedules
from annealbench.schedules import Schedule, ScheduleError

__all__ = ["OptaxSchedule", "ScheduleError", "schedule"]


@dataclass(frozen=True)
class OptaxSchedule:
    """``count -> rate`` for optax: ``factor * schedule(min(count, total_steps) / total_steps)``.

    Made by :func:`schedule`; a frozen dataclass, so it can be compared, hashed and printed.
    """

    schedule: Schedule
    total_steps: int
    factor: float = 1.0

    def __call__(self, count: Any) -> Any:
        """The rate of the update that follows ``count`` earlier ones (an int or a JAX
        integer array, traced or not; negative counts give the first rate)."""
        count = jnp.clip(jnp.asarray(count), 0, self.total_steps)
        rate = self.schedule(count / self.total_steps)
        return rate if self.factor == 1.0 else rate * self.factor


def schedule(
    schedule: str | Schedule, total_steps: int, *, peak: float | None = None
) -> OptaxSchedule:
    """An optax schedule that anneals along ``schedule`` over ``total_steps`` updates.

    Args:
        schedule: a name from :func:`annealbench.schedules.names` (the paper's defaults)
            or a :class:`~annealbench.schedules.Schedule`.
        total_steps: the number of updates that span training (optax's ``count`` runs
            from 0); later updates hold the final rate.
        peak: the rate the schedule's peak is scaled to, as
            :class:`~annealbench.AnnealingLR` scales it to a param group's lr: every rate
            is multiplied by ``peak / schedule.peak``. None (the default) keeps the
            schedule's own rates.

    Raises:
        ScheduleError: an unknown name, a ``total_steps`` that is not an integer >= 1, or
            a ``peak`` that is not a finite number > 0.

    Example::

        sched = annealbench.optax.schedule("sig+", total_steps=epochs * steps_per_epoch)
        optimizer = optax.sgd(learning_rate=sched, momentum=0.9)
    """
    resolved = schedules.resolve(schedule)
    steps = schedules.check_total_steps(total_steps)
    return OptaxSchedule(resolved, steps, schedules.peak_factor(resolved, peak))
