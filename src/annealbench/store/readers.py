"""Reading a store: study names and settings, and runs, epochs and status as DataFrames.

Nothing here writes, so every method works on a store opened with ``readonly=True``;
pandas is imported only when a frame is asked for.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from annealbench.errors import StoreError
from annealbench.store.queue import DEFAULT_LEASE_S, stale_runs
from annealbench.store.schema import EPOCH_FIELDS, STATUSES, StoreFile
from annealbench.training.config import TUNING_SEED

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["StoreReaders"]


#: A run's budget: its epochs as a percentage of its full budget's (100 for a full run).
BUDGET = "coalesce(100.0 * r.epochs / json_extract(r.config, '$.full_epochs'), 100.0) AS budget"


class StoreReaders(StoreFile):
    """The reading half of :class:`annealbench.store.Store`."""

    def study_id(self, name: str) -> int:
        row = self._conn.execute("SELECT study_id FROM study WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(
                f"no study {name!r} in {self.path}; studies there: {self.study_names() or 'none'}"
            )
        return int(row[0])

    def study_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM study ORDER BY study_id")]

    def study_settings(self, name: str) -> dict[str, Any]:
        row = self._conn.execute("SELECT settings FROM study WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise StoreError(f"no study {name!r} in {self.path}")
        return json.loads(row[0])

    def orphaned_runs(
        self, study: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> list[int]:
        """Runs marked running whose process is gone: the next claim hands them out."""
        if study is None:
            return stale_runs(self._conn, "1", (), lease_s)
        return stale_runs(self._conn, "name = ?", (study,), lease_s)

    def _frame(self, sql: str, study: str | None, tuning: bool = True) -> pd.DataFrame:
        import pandas as pd  # here, so workers that only train never import it

        conditions = [] if study is None else ["s.name = ?"]
        if not tuning:  # a tuned study's search runs are not among its results
            conditions.append(f"r.seed < {TUNING_SEED}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        params = () if study is None else (study,)
        # A version 1 store read without upgrading it has no crash counts.
        crashes = "r.crashes" if "crashes" in self._run_columns else "0 AS crashes"
        # A version 2 store read without upgrading it has no validation columns.
        validation = (
            "e.val_loss, e.val_acc"
            if "val_acc" in self._epoch_columns
            else "NULL AS val_loss, NULL AS val_acc"
        )
        try:
            return pd.read_sql_query(
                sql.format(where=where, crashes=crashes, validation=validation, budget=BUDGET),
                self._conn,
                params=params,
            )
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise StoreError(f"cannot read results store {self.path}: {exc}") from exc

    def runs_frame(self, study: str | None = None, tuning: bool = False) -> pd.DataFrame:
        """One row per run: run_id, study, dataset, model, method, seed, epochs, status, error,
        plus run_key, batch_size, subset, step_per, lr_scale, budget (percent of the full
        budget's epochs: a study's ``budgets``), attempts (claims, resumes
        included), crashes (worker deaths, what --max-retries limits), epochs_done, config,
        environment and timestamps. A tuned study's search runs (seeds from
        :data:`~annealbench.training.config.TUNING_SEED`) only with ``tuning=True``."""
        return self._frame(
            """
            SELECT r.run_id, s.name AS study, r.dataset, r.model, r.method, r.seed, r.epochs,
                   r.status, r.error, r.run_key,
                   json_extract(r.config, '$.batch_size') AS batch_size,
                   json_extract(r.config, '$.subset') AS subset,
                   json_extract(r.config, '$.step_per') AS step_per,
                   coalesce(json_extract(r.config, '$.lr_scale'), 1.0) AS lr_scale,
                   {budget},
                   r.attempts, {crashes},
                   (SELECT count(*) FROM epoch e WHERE e.run_id = r.run_id) AS epochs_done,
                   r.config, r.environment, r.created_at, r.started_at, r.finished_at
            FROM run r JOIN study s USING (study_id) {where}
            ORDER BY r.run_id
            """,
            study,
            tuning,
        )

    def epochs_frame(self, study: str | None = None, tuning: bool = False) -> pd.DataFrame:
        """One row per stored epoch: run_id, study, dataset, model, method, seed, epoch, lr,
        train_loss, train_acc, test_loss, test_acc, wall_time, val_loss, val_acc (NaN
        without a validation split), the run's status and budget.
        Non-finite metrics (a diverged epoch) read as NaN."""
        frame = self._frame(
            """
            SELECT e.run_id, s.name AS study, r.dataset, r.model, r.method, r.seed, e.epoch,
                   e.lr, e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.wall_time,
                   {validation}, r.status, {budget}
            FROM epoch e JOIN run r USING (run_id) JOIN study s USING (study_id) {where}
            ORDER BY e.run_id, e.epoch
            """,
            study,
            tuning,
        )
        for name in EPOCH_FIELDS:
            frame[name] = frame[name].astype("float64")
        return frame

    def status_frame(self, study: str | None = None) -> pd.DataFrame:
        """Run counts per study, dataset and model: total, done, running, diverged, failed and
        remaining (pending or running)."""
        import pandas as pd

        runs = self.runs_frame(study, tuning=True)
        runs["study"] = runs["study"].where(runs["seed"] < TUNING_SEED, runs["study"] + " (tuning)")
        columns = ["study", "dataset", "model"]
        numbers = ["total", "done", "running", "diverged", "failed", "remaining"]
        if runs.empty:
            return pd.DataFrame(columns=[*columns, *numbers])
        counts = pd.crosstab([runs[c] for c in columns], runs["status"])
        counts = counts.reindex(columns=list(STATUSES), fill_value=0)
        counts.insert(0, "total", counts.sum(axis=1))
        counts["remaining"] = counts["pending"] + counts["running"]
        counts = counts[numbers].reset_index()
        counts.columns.name = None
        return counts
