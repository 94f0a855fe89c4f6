"""Every error annealbench raises on purpose, under one root: :class:`AnnealbenchError`.

The command line catches the root alone and prints its message (which names the bad value
and the fix); anything else is a bug and keeps its traceback. Two families matter to the
study driver:

- :class:`UsageError`: the user asked for something that cannot be (a bad option, name or
  definition). Also a ``ValueError``, as Python's own argument errors are.
- :class:`StudyWideError`: a failure every other run of the study would repeat (the data
  is missing, the device does not exist). The driver stops handing out runs after one.

This module imports nothing, so every layer (even the torch-free schedules) can use it.
"""

from __future__ import annotations

__all__ = [
    "AnnealbenchError",
    "UsageError",
    "StudyWideError",
    "ScheduleError",
    "MethodError",
    "ConfigError",
    "StudyError",
    "DataError",
    "CheckpointError",
    "StoreError",
    "ClaimLost",
    "ExecutorError",
    "ReportError",
]


class AnnealbenchError(Exception):
    """The root: an error whose message tells the user what is wrong and what to do."""


class UsageError(AnnealbenchError, ValueError):
    """Something asked for that cannot be: an option, a name or a definition."""


class StudyWideError(AnnealbenchError):
    """A run failed for a reason every other run of the study shares: the study stops."""


class ScheduleError(UsageError):
    """An ill-formed learning-rate schedule (a rate out of range, an unknown name...)."""


class MethodError(UsageError):
    """An unknown or ill-formed training method."""


class ConfigError(UsageError, StudyWideError):
    """A run configuration that cannot be trained here (unknown names, a model that does
    not fit the data, a device this machine lacks)."""


class StudyError(UsageError):
    """A study that cannot run: unknown preset or names, an empty grid, bad options."""


class DataError(StudyWideError, RuntimeError):
    """Missing or corrupt data; the message names the file or folder and how to get it."""


class CheckpointError(AnnealbenchError, RuntimeError):
    """A checkpoint that cannot be used for this run (unreadable, or another run's)."""


class StoreError(AnnealbenchError, RuntimeError):
    """Not a store, a newer schema, a read-only or full disk, or conflicting settings."""


class ClaimLost(StoreError):
    """This process no longer holds the run (it was reclaimed after its lease expired)."""


class ExecutorError(AnnealbenchError, RuntimeError):
    """An executor cannot start: Ray missing or unreachable, bad resources."""


class ReportError(AnnealbenchError, RuntimeError):
    """A report that cannot be written (nothing to report, an unwritable folder)."""
