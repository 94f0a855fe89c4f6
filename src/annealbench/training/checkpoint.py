"""Run checkpoints: published atomically, read with ``weights_only``, checked against the run.

One file per run, in one format whether the run trains alone or in a batched group, so a
run interrupted in a group may continue alone and the other way round. The file holds the
run's identity, status, records, optimizer-update count, model and optimizer state (torch's
own ``state_dict`` formats) and its batch-order generator's state (the augmentation generator
is reseeded every epoch from the run's seed, so nothing device-specific is saved).

A checkpoint lives in a local folder or, so that every node of a cluster can resume any
run, in an object store (``s3://bucket/prefix``, through pyarrow; ``annealbench[s3]``).
"""

from __future__ import annotations

import errno
import io
import math
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from annealbench.errors import CheckpointError, StudyWideError
from annealbench.training.config import OPTIONAL_RECORD_FIELDS, EpochRecord, RunConfig
from annealbench.training.location import Location, is_uri, join

__all__ = [
    "FORMAT",
    "Location",
    "NoSpaceError",
    "is_uri",
    "join",
    "load_checkpoint",
    "records_of",
    "save_atomic",
]

#: 2: the update count replaces the scheduler state (the loop computes every rate from it).
FORMAT = 2
MIB = 1024 * 1024


class NoSpaceError(StudyWideError, CheckpointError):
    """A checkpoint did not fit on its disk: every later run would fail the same way."""


def save_atomic(obj: dict[str, Any], where: str | os.PathLike[str] | Location) -> None:
    """Serialize ``obj`` with torch.save and publish it atomically at ``where``.

    A disk too full for it raises :class:`NoSpaceError` (study-wide: later runs would fail
    the same way) naming the folder and the space the checkpoint needs.
    """
    location = Location.of(where)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    blob = buffer.getvalue()
    try:
        location.write_atomic(blob)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise NoSpaceError(no_space_message(location, len(blob))) from None


def no_space_message(location: Location, size: int) -> str:
    folder = Path(location.target).parent
    try:
        have = f", {shutil.disk_usage(folder).free / MIB:.1f} MiB free"
    except OSError:
        have = ""
    return (
        f"no space left on the device of {folder} for checkpoint {Path(location.target).name}: "
        f"it needs about {size / MIB:.1f} MiB{have}. Free space there or pass --checkpoint-dir "
        "on another disk, then rerun the same command: finished epochs are kept."
    )


def describe_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """``field: checkpoint X vs run Y`` for every field that differs."""
    keys = sorted(set(saved) | set(current))
    return "; ".join(
        f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    )


def load_checkpoint(where: str | os.PathLike[str] | Location, config: RunConfig) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) and check it belongs to ``config``."""
    location = Location.of(where)
    if not location.remote and not Path(location.target).is_file():
        raise CheckpointError(
            f"checkpoint {location} is not a regular file; pass a file path (or none)"
        )
    try:
        blob = io.BytesIO(location.read_bytes())
        state = torch.load(blob, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, foreign pickle, unreachable
        raise CheckpointError(
            f"checkpoint {location} cannot be read ({type(exc).__name__}: {exc}); "
            "delete it to restart the run from scratch"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(
            f"{location} is not an annealbench checkpoint of format {FORMAT} "
            f"(found {found!r}); delete it to restart the run from scratch"
        )
    if state.get("config") != config.identity():
        diff = describe_difference(state.get("config") or {}, config.identity())
        raise CheckpointError(
            f"checkpoint {location} belongs to a different run ({diff}); "
            "use another checkpoint path or delete it"
        )
    state["records"] = records_of(state, config, location)
    return state


def records_of(state: dict[str, Any], config: RunConfig, where: object) -> list[EpochRecord]:
    """The checkpoint's epoch records, refused unless they agree with the run they claim."""
    names = {f.name for f in fields(EpochRecord)}
    needed = names - OPTIONAL_RECORD_FIELDS  # checkpoints written before validation lack them
    raw = state.get("records")
    problem = None
    if not isinstance(raw, list) or not all(
        isinstance(r, dict) and needed <= set(r) <= names for r in raw
    ):
        problem = "its epoch records are malformed"
    elif len(raw) > config.epochs:
        problem = f"it holds {len(raw)} epochs for a run of {config.epochs}"
    elif [r["epoch"] for r in raw] != list(range(1, len(raw) + 1)):
        problem = "its epoch numbers are not 1, 2, 3, ..."
    elif state.get("epoch") != len(raw):
        problem = f"it says epoch {state.get('epoch')!r} but holds {len(raw)} records"
    elif state.get("status") == "running" and not all(
        math.isfinite(float(r["train_loss"])) for r in raw
    ):
        problem = "a running run's records hold a non-finite training loss"
    if problem is not None:
        raise CheckpointError(f"checkpoint {where} is inconsistent: {problem}; delete it")
    return [EpochRecord(**r) for r in raw]
