"""``AnnealingSchedule``: any annealbench schedule as a Keras 3 learning-rate schedule.

Keras calls a schedule with the optimizer's ``iterations``, the number of updates applied
so far, and uses the answer for the update it is about to apply: update ``k`` (from 0)
runs at ``schedule(min(k, total_steps) / total_steps)``, as with
:class:`~annealbench.AnnealingLR` and :func:`annealbench.optax.schedule`. (Reading
``optimizer.learning_rate`` after an update therefore gives the next update's rate.) The
rate is computed in closed form from the count in the backend's own tensors, so it works
with the torch and JAX backends, inside their compiled train steps too.

The schedule is registered with Keras as ``annealbench>AnnealingSchedule`` and saves as its
plain config, so a model saved with an optimizer using it loads back after
``import annealbench.keras``. Keras must have its backend chosen (``KERAS_BACKEND``) before
this module is imported.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from annealbench import schedules
from annealbench.schedules import Schedule, ScheduleError

__all__ = ["AnnealingSchedule", "ScheduleError"]


@keras.saving.register_keras_serializable(package="annealbench")
class AnnealingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Anneal along ``schedule`` over ``total_steps`` optimizer updates.

    Args:
        schedule: a name from :func:`annealbench.schedules.names` (the paper's defaults)
            or a :class:`~annealbench.schedules.Schedule`.
        total_steps: the number of updates that span training (``epochs`` times the
            batches per epoch); later updates hold the final rate. Keras counts every
            batch, also with ``gradient_accumulation_steps``: count batches then too.
        peak: the rate the schedule's peak is scaled to, as
            :class:`~annealbench.AnnealingLR` scales it to a param group's lr: every rate
            is multiplied by ``peak / schedule.peak``. None (the default) keeps the
            schedule's own rates.

    Raises:
        ScheduleError: an unknown name, a ``total_steps`` that is not an integer >= 1, or
            a ``peak`` that is not a finite number > 0.

    Example::

        steps = epochs * math.ceil(len(x) / batch_size)
        optimizer = keras.optimizers.SGD(learning_rate=AnnealingSchedule("sig+", steps))
    """

    def __init__(
        self, schedule: str | Schedule, total_steps: int, peak: float | None = None
    ) -> None:
        self.schedule = schedules.resolve(schedule)
        self.total_steps = schedules.check_total_steps(total_steps)
        self.factor = schedules.peak_factor(self.schedule, peak)
        self.peak = None if peak is None else float(peak)

    def __call__(self, step: Any) -> Any:
        """The rate of the update that follows ``step`` applied ones (a backend tensor)."""
        count = ops.cast(ops.convert_to_tensor(step), keras.config.floatx())
        progress = ops.clip(count, 0.0, float(self.total_steps)) / float(self.total_steps)
        rate = self.schedule(progress)
        return rate if self.factor == 1.0 else rate * self.factor

    def get_config(self) -> dict[str, Any]:
        """Plain data: the schedule as :meth:`~annealbench.schedules.Schedule.to_config`."""
        return {
            "schedule": self.schedule.to_config(),
            "total_steps": self.total_steps,
            "peak": self.peak,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AnnealingSchedule:
        """Rebuild the schedule :meth:`get_config` described."""
        config = dict(config)
        config["schedule"] = schedules.from_config(config["schedule"])
        return cls(**config)

    def __repr__(self) -> str:
        peak = "" if self.peak is None else f", peak={self.peak!r}"
        return f"AnnealingSchedule({self.schedule!r}, total_steps={self.total_steps}{peak})"
