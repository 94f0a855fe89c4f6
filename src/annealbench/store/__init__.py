"""The results store: one SQLite file holding studies, runs and per-epoch metrics.

This is the only code that writes results. :class:`Store` is made of three parts:

- :mod:`~annealbench.store.schema`: the schema, opening, creating and checking a file, and
  the write transaction (every write is one ``BEGIN IMMEDIATE``; the file is in WAL mode);
- :mod:`~annealbench.store.queue`: studies, runs, claims, leases and results; runs are
  handed out by :meth:`Store.pending_group` then :meth:`Store.claim_runs`, so any number of
  processes can share one store without training a run twice;
- :mod:`~annealbench.store.readers`: study names and settings, and DataFrames of runs,
  epochs and status.

The store imports neither torch nor the engine: configurations come in as an engine
``RunConfig`` or a plain mapping, keyed by :func:`annealbench.training.config.run_key`
(the same for both), and go out as dicts.
"""

from __future__ import annotations

from annealbench.errors import ClaimLost, StoreError
from annealbench.store.queue import (
    DEFAULT_LEASE_S,
    Claim,
    Pending,
    RunQueue,
    Worker,
    config_dict,
    settings_differences,
)
from annealbench.store.readers import StoreReaders
from annealbench.store.schema import APPLICATION_ID, FINAL_STATUSES, SCHEMA_VERSION, STATUSES

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_LEASE_S",
    "FINAL_STATUSES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Claim",
    "ClaimLost",
    "Pending",
    "Store",
    "StoreError",
    "Worker",
    "config_dict",
    "settings_differences",
]


class Store(RunQueue, StoreReaders):
    """One SQLite results file: ``Store(path)`` creates it if missing; ``readonly=True`` reads.

    Writing and claiming come from :class:`RunQueue`, reading from :class:`StoreReaders`,
    opening and the write transaction from their common base, ``schema.StoreFile``.
    """
