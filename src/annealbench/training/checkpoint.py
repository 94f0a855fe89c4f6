"""Run checkpoints: written atomically, read with ``weights_only``, checked against the run.

One file per run, in one format whether the run trains alone or in a batched group, so a
run interrupted in a group may continue alone and the other way round. The file holds the
run's identity, status, records, optimizer-update count, model and optimizer state (torch's
own ``state_dict`` formats) and the two generators' states.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from annealbench.errors import CheckpointError
from annealbench.training.config import EpochRecord, RunConfig

__all__ = ["FORMAT", "save_atomic", "load_checkpoint", "records_of"]

#: 2: the update count replaces the scheduler state (the loop computes every rate from it).
FORMAT = 2


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """``field: checkpoint X vs run Y`` for every field that differs."""
    keys = sorted(set(saved) | set(current))
    return "; ".join(
        f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    )


def load_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) and check it belongs to ``config``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, foreign pickle
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
            "delete it to restart the run from scratch"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(
            f"{path} is not an annealbench checkpoint of format {FORMAT} (found {found!r}); "
            "delete it to restart the run from scratch"
        )
    if state.get("config") != config.identity():
        diff = describe_difference(state.get("config") or {}, config.identity())
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run ({diff}); "
            "use another checkpoint path or delete it"
        )
    state["records"] = records_of(state, config, path)
    return state


def records_of(state: dict[str, Any], config: RunConfig, path: Path) -> list[EpochRecord]:
    """The checkpoint's epoch records, refused unless they agree with the run they claim."""
    names = {f.name for f in fields(EpochRecord)}
    raw = state.get("records")
    problem = None
    if not isinstance(raw, list) or not all(isinstance(r, dict) and set(r) == names for r in raw):
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
        raise CheckpointError(f"checkpoint {path} is inconsistent: {problem}; delete it")
    return [EpochRecord(**r) for r in raw]


def record_dicts(records: list[EpochRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
