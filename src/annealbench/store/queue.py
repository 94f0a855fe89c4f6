"""The queue of runs: studies and their runs, claims, leases and results.

A run is handed out in two steps, so that nothing slow happens while the store is locked:
:meth:`RunQueue.pending_group` reads candidates outside any write transaction, the caller
decides how many to take, and :meth:`RunQueue.claim_runs` claims those still pending in one
short ``BEGIN IMMEDIATE`` transaction. A run is therefore never trained twice, however many
processes share the store.

Configurations come in as an engine ``RunConfig`` (anything with ``to_dict()``) or a plain
mapping, are identified by :func:`annealbench.training.config.run_key`, and go out as dicts.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from annealbench.errors import ClaimLost, StoreError
from annealbench.store.schema import EPOCH_FIELDS, FINAL_STATUSES, StoreFile, now
from annealbench.training.config import run_key

__all__ = [
    "DEFAULT_LEASE_S",
    "Claim",
    "Pending",
    "RunQueue",
    "Worker",
    "config_dict",
    "merge_settings",
    "settings_differences",
    "stale_runs",
]

#: A run claimed on another host is reclaimed when its heartbeat is older than this.
DEFAULT_LEASE_S = 30 * 60.0


def _pid_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Worker:
    """The process that holds a claim: host name, pid and the pid's start time (pid reuse)."""

    host: str
    pid: int
    pid_start: str | None

    @classmethod
    def current(cls) -> Worker:
        return cls(socket.gethostname(), os.getpid(), _pid_start(os.getpid()))

    def is_alive(self) -> bool:
        """Whether this process still runs; only answerable for processes on this host."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else
        start = _pid_start(self.pid)
        return self.pid_start is None or start is None or start == self.pid_start


@dataclass(frozen=True)
class Claim:
    """A run handed to one worker: write its epochs and result with this object.

    ``attempts`` counts the run's claims, this one included (every start or resume, after
    Ctrl-C, a killed driver or a full disk too); ``crashes`` counts the deaths of the worker
    processes that trained it before (:meth:`RunQueue.record_crash`), what ``--max-retries``
    limits.
    """

    run_id: int
    run_key: str
    token: str
    config: dict[str, Any]
    attempts: int
    crashes: int = 0


@dataclass(frozen=True)
class Pending:
    """A pending run offered by :meth:`RunQueue.pending_group`, not yet claimed."""

    run_id: int
    run_key: str
    config: dict[str, Any]


def config_dict(config: Any) -> dict[str, Any]:
    """A run configuration as a plain dict (an engine ``RunConfig`` or a mapping)."""
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"expected a RunConfig or a mapping, got {type(config).__name__}")


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


#: The columns and placeholders of one epoch row: "(run_id, epoch, lr, ...) VALUES (?, ...)".
_EPOCH_COLUMNS = (
    f"(run_id, epoch, {', '.join(EPOCH_FIELDS)}) "
    f"VALUES ({', '.join('?' * (len(EPOCH_FIELDS) + 2))})"
)


def _record_values(record: Any) -> tuple[Any, ...]:
    """(epoch, lr, ..., wall_time) of an ``EpochRecord`` or a mapping with the same fields."""
    get = record.get if isinstance(record, Mapping) else lambda name: getattr(record, name)
    epoch = int(get("epoch"))
    return (epoch, *(_finite_or_none(get(name)) for name in EPOCH_FIELDS))


def settings_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """Human-readable lines naming each setting whose stored and given values differ."""
    lines = []
    for name in sorted(set(stored) | set(given)):
        old, new = stored.get(name, "<unset>"), given.get(name, "<unset>")
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += [f"{name}.{line}" for line in settings_differences(old, new)]
        elif old != new:
            lines.append(f"{name}: stored {old!r}, given {new!r}")
    return lines


#: The grid's lists: a study grows along them (stored names first, new ones appended).
GRID_LISTS = ("datasets", "models", "methods")


def _is_list(*values: Any) -> bool:
    return all(v is None or isinstance(v, list) for v in values)


def _is_count(*values: Any) -> bool:
    return all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values)


#: Settings that map a name to its definition (a user method, a named user dataset) or to
#: the facts of a user dataset: a grown study gains new names; a name held by both must
#: be defined alike.
DEFINITIONS = ("custom_methods", "custom_datasets", "data")


def merge_settings(
    stored: Mapping[str, Any], given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The settings of a study grown from ``stored`` by ``given``, and the differences that
    forbid growing it.

    The grid grows: ``datasets``, ``models`` and ``methods`` become the union (stored order,
    then the new names), ``trials`` the larger count, ``custom_methods`` gains the new user
    methods (``custom_datasets`` and ``data`` the new user datasets), ``source`` (the study
    file) is the newest. Fewer is no difference: nothing is removed. Everything else
    (``run``, every run option, and a definition or data fingerprint both hold) must be
    equal; each inequality is one line of the returned list (as
    :func:`settings_differences` writes it).
    """
    merged: dict[str, Any] = dict(stored)
    fixed_old: dict[str, Any] = {}
    fixed_new: dict[str, Any] = {}
    for name in sorted(set(stored) | set(given)):
        old, new = stored.get(name), given.get(name)
        if name in GRID_LISTS and _is_list(old, new):
            merged[name] = list(old or []) + [v for v in new or [] if v not in (old or [])]
        elif name == "trials" and _is_count(old, new):
            merged[name] = max(old or 0, new or 0)
        elif name == "source":  # what was run most recently: shown, never a conflict
            merged[name] = new if new is not None else old
        elif name in DEFINITIONS and all(v is None or isinstance(v, Mapping) for v in (old, new)):
            old, new = old or {}, new or {}
            merged[name] = {**new, **old}
            shared = sorted(set(old) & set(new))
            fixed_old[name] = {method: old[method] for method in shared}
            fixed_new[name] = {method: new[method] for method in shared}
        else:
            if name in stored:
                fixed_old[name] = old
            if name in given:
                fixed_new[name] = new
    return merged, settings_differences(fixed_old, fixed_new)


def _conflict_message(
    name: str, path: Any, stored: Mapping[str, Any], given: Mapping[str, Any], conflicts: list[str]
) -> str:
    """Why a rerun of study ``name`` is refused: the conflicts, then the grid's differences
    (which alone would only grow the study)."""
    growth = settings_differences(
        {k: v for k, v in stored.items() if k in (*GRID_LISTS, "trials")},
        {k: v for k, v in given.items() if k in (*GRID_LISTS, "trials")},
    )
    lines = [f"study {name!r} in {path} was created with other settings:", *conflicts]
    if growth:
        lines += ["the grid differs too (alone, this would grow the study):", *growth]
    return (
        "\n  ".join(lines)
        + "\nRerun with the stored run options (and user methods) to resume or grow the study, "
        "or pass a new --study name (results of different configurations are never mixed in "
        "one study)."
    )


def stale_runs(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...], lease_s: float
) -> list[int]:
    """Running runs whose process is gone (this host) or silent for ``lease_s`` (others).

    ``where`` filters ``run JOIN study`` (e.g. ``"name = ?"``), with ``params``.
    """
    here, now_s, stale = socket.gethostname(), time.time(), []
    for run_id, host, pid, pid_start, heartbeat in conn.execute(
        "SELECT run_id, host, pid, pid_start, heartbeat FROM run JOIN study USING (study_id) "
        f"WHERE status = 'running' AND {where}",
        params,
    ).fetchall():
        if host == here and pid is not None:
            dead = not Worker(host, int(pid), pid_start).is_alive()
        else:
            dead = heartbeat is None or now_s - heartbeat > lease_s
        if dead:
            stale.append(int(run_id))
    return stale


def _owned(conn: sqlite3.Connection, claim: Claim) -> None:
    """Raise ClaimLost unless ``claim`` still holds its run (inside a write transaction)."""
    row = conn.execute("SELECT status, claim FROM run WHERE run_id = ?", (claim.run_id,)).fetchone()
    if row is None or row[0] != "running" or row[1] != claim.token:
        raise ClaimLost(
            f"run {claim.run_id} is no longer held by this process (it was reclaimed after "
            "its lease expired); its results are left to the process that holds it now."
        )


def _replace_epochs(conn: sqlite3.Connection, run_id: int, epochs: Iterable[Any]) -> None:
    rows = [(run_id, *_record_values(r)) for r in epochs]
    conn.execute("DELETE FROM epoch WHERE run_id = ?", (run_id,))
    conn.executemany(f"INSERT INTO epoch {_EPOCH_COLUMNS}", rows)


class RunQueue(StoreFile):
    """The writing half of :class:`annealbench.store.Store`: studies, runs, claims, results."""

    def ensure_study(
        self,
        name: str,
        settings: Mapping[str, Any],
        check: Callable[[dict[str, Any]], None] | None = None,
    ) -> int:
        """The id of study ``name``, created with ``settings`` if new, else grown by them.

        A study grows (:func:`merge_settings`): its stored settings become the union of both
        grids, in one write transaction, so processes growing it at once keep every addition.
        ``check(merged)``, when given, may refuse the grown grid (its error propagates and
        nothing is written). Raises StoreError naming every difference when the run options or
        a stored user method's definition differ: results of different configurations are
        never mixed in one study.
        """
        settings = json.loads(json.dumps(settings, sort_keys=True))  # normalise tuples etc.
        with self._write() as conn:
            row = conn.execute(
                "SELECT study_id, settings FROM study WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO study (name, settings, created_at) VALUES (?, ?, ?)",
                    (name, json.dumps(settings, sort_keys=True), now()),
                )
                return int(cursor.lastrowid)
            study_id, stored = int(row[0]), json.loads(row[1])
            merged, conflicts = merge_settings(stored, settings)
            if conflicts:
                raise StoreError(_conflict_message(name, self.path, stored, settings, conflicts))
            if check is not None:
                check(merged)
            if merged != stored:
                conn.execute(
                    "UPDATE study SET settings = ? WHERE study_id = ?",
                    (json.dumps(merged, sort_keys=True), study_id),
                )
        return study_id

    def add_runs(self, study_id: int, configs: Iterable[Any]) -> int:
        """Add the runs not yet in the study (by :func:`run_key`), in the given order;
        returns how many."""
        rows = []
        created = now()
        for config in configs:
            d = config_dict(config)
            rows.append(
                (
                    study_id,
                    run_key(d),
                    d["dataset"],
                    d["model"],
                    d["method"],
                    int(d.get("seed", 0)),
                    int(d.get("epochs", 0)),
                    json.dumps(d, sort_keys=True),
                    created,
                )
            )
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO run (study_id, run_key, dataset, model, method, seed, "
                "epochs, config, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

    def retry_failed(self, study_id: int) -> int:
        """Put the study's failed runs back to pending (their epochs are kept) with their crash
        count reset, so each rerun gets ``--max-retries`` anew; returns how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE run SET status = 'pending', error = NULL, finished_at = NULL, "
                "crashes = 0 WHERE study_id = ? AND status = 'failed'",
                (study_id,),
            )
            return cursor.rowcount

    # -- claiming ------------------------------------------------------------------------

    def pending_group(
        self, study_id: int, limit: int, lease_s: float = DEFAULT_LEASE_S,
        exclude: Collection[int] = (),
    ) -> list[Pending]:  # fmt: skip
        """Up to ``limit`` pending runs of the dataset and model of the first pending run,
        in run order: candidates for one group. Empty when none is pending. Runs in
        ``exclude`` (run ids) are passed over.

        Runs left 'running' by a dead process (same host: its pid is gone; another host: no
        heartbeat for ``lease_s`` seconds) are put back to pending first, in a short write
        transaction; the candidates are read outside any, so the caller may take its time
        choosing before :meth:`claim_runs`.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._write() as conn:
            stale = stale_runs(conn, "study_id = ?", (study_id,), lease_s)
            conn.executemany(
                "UPDATE run SET status = 'pending', claim = NULL, pid = NULL, pid_start = NULL "
                "WHERE run_id = ?",
                [(run_id,) for run_id in stale],
            )
        held = "AND run_id NOT IN (SELECT value FROM json_each(?3))"
        rows = self._conn.execute(  # one statement: one consistent snapshot
            f"SELECT run_id, run_key, config FROM run WHERE study_id = ?1 AND status = 'pending' "
            f"{held} AND (dataset, model) = (SELECT dataset, model FROM run WHERE study_id = ?1 "
            f"AND status = 'pending' {held} ORDER BY run_id LIMIT 1) ORDER BY run_id LIMIT ?2",
            (study_id, limit, json.dumps(sorted(int(i) for i in exclude))),
        ).fetchall()
        return [Pending(int(row[0]), row[1], json.loads(row[2])) for row in rows]

    def claim_runs(
        self, study_id: int, run_ids: Iterable[int], worker: Worker | None = None
    ) -> list[Claim]:
        """Claim for ``worker`` those of ``run_ids`` still pending, in the given order, in one
        write transaction; runs another process took first are left out (maybe all of them).
        """
        worker = worker or Worker.current()
        wanted = list(dict.fromkeys(int(run_id) for run_id in run_ids))
        if not wanted:
            return []
        token = uuid.uuid4().hex
        marks = ", ".join("?" * len(wanted))
        with self._write() as conn:
            found = {
                int(row[0]): row
                for row in conn.execute(
                    "SELECT run_id, run_key, config, attempts, crashes FROM run WHERE study_id = ? "
                    f"AND status = 'pending' AND run_id IN ({marks})",
                    (study_id, *wanted),
                )
            }
            rows = [found[run_id] for run_id in wanted if run_id in found]
            conn.executemany(
                "UPDATE run SET status = 'running', claim = ?, host = ?, pid = ?, pid_start = ?, "
                "heartbeat = ?, attempts = attempts + 1, started_at = coalesce(started_at, ?) "
                "WHERE run_id = ?",
                [
                    (token, worker.host, worker.pid, worker.pid_start, time.time(), now(), row[0])
                    for row in rows
                ],
            )
        return [
            Claim(int(row[0]), row[1], token, json.loads(row[2]), int(row[3]) + 1, int(row[4]))
            for row in rows
        ]

    def claim_next(
        self,
        study_id: int,
        worker: Worker | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim | None:
        """Hand the next pending run of the study to ``worker``, or None if none is left.

        Dead processes' runs are reclaimed first, as in :meth:`pending_group`; a run another
        process claims in between is skipped and the next one asked for.
        """
        while pending := self.pending_group(study_id, 1, lease_s=lease_s):
            claims = self.claim_runs(study_id, [pending[0].run_id], worker=worker)
            if claims:
                return claims[0]
        return None

    # -- results -------------------------------------------------------------------------

    def heartbeat(self, claims: Iterable[Claim]) -> None:
        """Tell other hosts these runs are still being trained."""
        with self._write() as conn:
            conn.executemany(
                "UPDATE run SET heartbeat = ? WHERE run_id = ? AND claim = ?",
                [(time.time(), c.run_id, c.token) for c in claims],
            )

    def record_epoch(self, claim: Claim, record: Any) -> None:
        """Store one epoch's metrics; writing the same epoch again replaces it (idempotent)."""
        values = _record_values(record)
        with self._write() as conn:
            _owned(conn, claim)
            conn.execute(f"INSERT OR REPLACE INTO epoch {_EPOCH_COLUMNS}", (claim.run_id, *values))
            conn.execute(
                "UPDATE run SET heartbeat = ? WHERE run_id = ?", (time.time(), claim.run_id)
            )

    def finish_run(
        self,
        claim: Claim,
        status: str,
        error: str | None = None,
        epochs: Iterable[Any] | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a claimed run done, diverged or failed.

        With ``epochs`` (the engine's full list from epoch 1), the stored epochs are replaced
        by exactly those, in the same transaction.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        with self._write() as conn:
            _owned(conn, claim)
            if epochs is not None:
                _replace_epochs(conn, claim.run_id, epochs)
            conn.execute(
                "UPDATE run SET status = ?, error = ?, claim = NULL, pid = NULL, pid_start = NULL, "
                "environment = coalesce(?, environment), finished_at = ? WHERE run_id = ?",
                (
                    status,
                    error,
                    None if environment is None else json.dumps(environment, sort_keys=True),
                    now(),
                    claim.run_id,
                ),
            )

    def record_crash(self, claim: Claim) -> int:
        """Count a death of the worker process training the claimed run (it stays claimed:
        release or fail it next); returns the run's crashes so far. Raises ClaimLost if
        another process holds the run now."""
        with self._write() as conn:
            _owned(conn, claim)
            conn.execute("UPDATE run SET crashes = crashes + 1 WHERE run_id = ?", (claim.run_id,))
            row = conn.execute("SELECT crashes FROM run WHERE run_id = ?", (claim.run_id,))
            return int(row.fetchone()[0])

    def release_run(self, claim: Claim) -> None:
        """Give a claimed run back (pending) so a later `annealbench run` continues it.

        Not a crash: Ctrl-C, a stopped driver and the like release runs without counting
        anything against ``--max-retries``; :meth:`record_crash` counts a dead worker."""
        with self._write() as conn:
            conn.execute(
                "UPDATE run SET status = 'pending', claim = NULL, pid = NULL, pid_start = NULL "
                "WHERE run_id = ? AND claim = ?",
                (claim.run_id, claim.token),
            )

    def add_result(
        self,
        study_id: int,
        config: Any,
        status: str,
        epochs: Iterable[Any],
        error: str | None = None,
        environment: Mapping[str, Any] | None = None,
    ) -> int:
        """Store a finished run in one call (imports, hand-made stores in tests); returns run_id."""
        d = config_dict(config)
        key = run_key(d)
        self.add_runs(study_id, [d])
        with self._write() as conn:
            run_id = conn.execute(
                "SELECT run_id FROM run WHERE study_id = ? AND run_key = ?", (study_id, key)
            ).fetchone()[0]
            token = uuid.uuid4().hex
            conn.execute(
                "UPDATE run SET status = 'running', claim = ? WHERE run_id = ?", (token, run_id)
            )
        claim = Claim(int(run_id), key, token, d, 1)
        self.finish_run(claim, status, error=error, epochs=epochs, environment=environment)
        return int(run_id)
