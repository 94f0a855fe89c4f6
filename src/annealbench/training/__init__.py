"""Training: one run or a batched group, through one loop (:mod:`.loop`).

- :mod:`.config`: what a run is (``RunConfig``), its key, and what it yields; torch-free;
- :mod:`.parts`: device, initial weights, the rate plan;
- :mod:`.loop`: the loop; :mod:`.single` and :mod:`.batched`: its two steppers;
- :mod:`.checkpoint`: atomic, checked checkpoints.

Names are imported lazily, so ``annealbench.training.config`` loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RunConfig": "config",
    "EpochRecord": "config",
    "RunResult": "config",
    "RunOutcome": "config",
    "run_key": "config",
    "resolve_device": "parts",
    "train": "loop",
    "train_group": "loop",
    "fit": "loop",
    "Trainer": "loop",
    "DIVERGED": "loop",
    "check_batchable": "batched",
    "should_batch": "batched",
    "load_checkpoint": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"annealbench.training.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'annealbench.training' has no attribute {name!r}")
