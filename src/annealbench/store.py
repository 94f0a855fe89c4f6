"""The results store: one SQLite file holding studies, runs and per-epoch metrics.

This is the only code that writes results. Every write is one ``BEGIN IMMEDIATE``
transaction, the file is in WAL mode, and runs are handed out by :meth:`Store.claim_many`
so that any number of processes can share one store without training a run twice.

Schema (``PRAGMA application_id`` = :data:`APPLICATION_ID`, ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`):

``meta(key, value)``
    ``app`` = ``annealbench``, ``schema_version``, ``created_at``, ``created_by`` (package version).
``study(study_id, name UNIQUE, settings JSON, created_at)``
    One row per study; ``settings`` is its grid and options. A rerun must match them.
``run(run_id, study_id, run_key, dataset, model, method, seed, epochs, config JSON, status,
error, attempts, claim, host, pid, pid_start, heartbeat, environment JSON, created_at,
started_at, finished_at)``
    One row per (study, configuration); ``status`` is pending, running, done, diverged or
    failed; ``claim``/``host``/``pid``/``heartbeat`` identify the process training it.
``epoch(run_id, epoch, lr, train_loss, train_acc, test_loss, test_acc, wall_time)``
    One row per finished epoch (1-based); accuracies in percent, losses per sample.

The store imports neither torch nor the engine: configurations come in as anything with
``to_dict()`` and ``key()`` (an engine ``RunConfig``) or as plain mappings, and go out as dicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: ``PRAGMA application_id`` of every annealbench store: the bytes ``ANLB``.
APPLICATION_ID = 0x414E4C42
#: Bumped whenever the schema changes; a store with a larger version is refused.
SCHEMA_VERSION = 1
#: Statuses a run can have; the last three are final.
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINAL_STATUSES = ("done", "diverged", "failed")
#: A run claimed on another host is reclaimed when its heartbeat is older than this.
DEFAULT_LEASE_S = 30 * 60.0

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = f"""
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE study (
    study_id   INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    settings   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE run (
    run_id      INTEGER PRIMARY KEY,
    study_id    INTEGER NOT NULL REFERENCES study(study_id),
    run_key     TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    model       TEXT NOT NULL,
    method      TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    epochs      INTEGER NOT NULL,
    config      TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    claim       TEXT,
    host        TEXT,
    pid         INTEGER,
    pid_start   TEXT,
    heartbeat   REAL,
    environment TEXT,
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT,
    UNIQUE (study_id, run_key)
);
CREATE INDEX run_grid ON run (study_id, dataset, model, method, seed);
CREATE INDEX run_status ON run (study_id, status);
CREATE TABLE epoch (
    run_id     INTEGER NOT NULL REFERENCES run(run_id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL CHECK (epoch >= 1),
    lr         REAL,
    train_loss REAL,
    train_acc  REAL,
    test_loss  REAL,
    test_acc   REAL,
    wall_time  REAL,
    PRIMARY KEY (run_id, epoch)
) WITHOUT ROWID;
"""

_EPOCH_FIELDS = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")


class StoreError(RuntimeError):
    """Not a store, a newer schema, a read-only or full disk, or conflicting settings."""


class ClaimLost(StoreError):
    """This process no longer holds the run (it was reclaimed after its lease expired)."""


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
    """A run handed to one worker: write its epochs and result with this object."""

    run_id: int
    run_key: str
    token: str
    config: dict[str, Any]
    attempts: int


def _pid_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def config_dict(config: Any) -> dict[str, Any]:
    """A run configuration as a plain dict (an engine ``RunConfig`` or a mapping)."""
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise TypeError(f"expected a RunConfig or a mapping, got {type(config).__name__}")


def config_key(config: Any) -> str:
    """The run's stable key: ``RunConfig.key()``, or a hash of a mapping's canonical JSON."""
    if not isinstance(config, Mapping) and hasattr(config, "key"):
        return str(config.key())
    text = json.dumps(config_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record_values(record: Any) -> tuple[Any, ...]:
    """(epoch, lr, ..., wall_time) of an ``EpochRecord`` or a mapping with the same fields."""
    get = record.get if isinstance(record, Mapping) else lambda name: getattr(record, name)
    epoch = int(get("epoch"))
    return (epoch, *(_finite_or_none(get(name)) for name in _EPOCH_FIELDS))


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


class Store:
    """One SQLite results file: ``Store(path)`` creates it if missing; ``readonly=True`` reads."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            self._check_header()
        elif readonly:
            raise StoreError(f"no results store at {self.path}; run `annealbench run` first")
        if not readonly:
            self._check_writable(exists)
            if not exists:
                self._create()
                self._check_header()
        self._conn = self._connect(readonly)
        self._check_schema()

    # -- opening -------------------------------------------------------------------------

    def _check_header(self) -> None:
        """Refuse foreign files by their header alone, so they are never opened for writing."""
        try:
            with open(self.path, "rb") as handle:
                header = handle.read(100)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
            raise StoreError(
                f"{self.path} is not an annealbench results store (not a SQLite database); "
                "pass another --store path. The file was left untouched."
            )
        app_id = int.from_bytes(header[68:72], "big")
        version = int.from_bytes(header[60:64], "big")
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is a SQLite database of another application "
                f"(application_id {app_id:#x}), not an annealbench results store; "
                "pass another --store path. The file was left untouched."
            )
        self._check_version(version)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}, newer than this annealbench "
                f"understands ({SCHEMA_VERSION}); upgrade annealbench to read it. "
                "The file was left untouched."
            )

    def _check_writable(self, exists: bool) -> None:
        """A store whose file or folder has no write permission is refused up front.

        The file mode is checked as well as ``os.access``: root may write anything, but a
        file with every write bit removed was meant to stay as it is.
        """
        if exists:
            mode = self.path.stat().st_mode
            if not os.access(self.path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP):
                raise StoreError(
                    f"results store {self.path} is read-only (mode {stat.filemode(mode)}); "
                    "make it writable (chmod u+w) or pass another --store. Nothing was changed."
                )
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder {folder}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK):
            raise StoreError(
                f"the folder {folder} is read-only; SQLite needs to write its journal next to "
                "the store. Pass a --store in a writable folder."
            )

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                try:
                    conn = self._open_uri("mode=ro")
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError:
                    # A WAL database in a read-only folder cannot create its -shm file;
                    # immutable=1 reads the main file alone (a writer there would be ignored).
                    conn = self._open_uri("immutable=1")
            else:
                conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc
        return conn

    def _open_uri(self, option: str) -> sqlite3.Connection:
        uri = f"{self.path.resolve().as_uri()}?{option}"
        conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    def _check_schema(self) -> None:
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            app = self._conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.path} is not a readable annealbench results store ({exc}); "
                "the file was left untouched."
            ) from exc
        if app is None or app[0] != "annealbench":
            raise StoreError(
                f"{self.path} lacks annealbench metadata; the file was left untouched."
            )
        if not self.readonly:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
            except sqlite3.Error as exc:
                raise self._translate(exc, "open") from exc

    def _create(self) -> None:
        """Build a new store beside ``path`` and link it into place in one step.

        Processes racing to create the same store never see a half-made file: each builds
        its own, exactly one link succeeds, and the others open the winner's file.
        """
        from annealbench import __version__

        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.new")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("BEGIN")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("app", "annealbench"),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created_at", _now()),
                        ("created_by", __version__),
                    ],
                )
                conn.execute("COMMIT")
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
            finally:
                conn.close()
            if self.path.exists():  # an empty file stands there: a store may replace it
                if self.path.stat().st_size == 0:
                    os.replace(tmp, self.path)
            else:
                with contextlib.suppress(FileExistsError):  # another process won the race
                    os.link(tmp, self.path)
        except sqlite3.Error as exc:
            raise self._translate(exc, "create") from exc
        except OSError as exc:
            raise StoreError(f"cannot create results store {self.path}: {exc.strerror}") from exc
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)

    # -- plumbing ------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _translate(self, exc: sqlite3.Error, action: str) -> StoreError:
        """A StoreError that says what went wrong with the file and what is safe."""
        text = str(exc).lower()
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"cannot {action} results store {self.path}: it is read-only ({exc}). "
                "Everything stored before is intact; make it writable or pass another --store."
            )
        if "disk is full" in text or "database or disk is full" in text:
            return StoreError(
                f"cannot {action} results store {self.path}: the disk is full. The failed write "
                "was rolled back and everything stored before it is intact; free space and rerun "
                "the same command to resume."
            )
        if "locked" in text or "busy" in text:
            return StoreError(
                f"results store {self.path} stayed locked by another process for 60 s ({exc}); "
                "retry when it is less busy."
            )
        return StoreError(f"cannot {action} results store {self.path}: {exc}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        if self.readonly:
            raise StoreError(f"results store {self.path} was opened read-only")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._translate(exc, "write to") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc, "write to") from exc
            raise

    # -- studies and runs ----------------------------------------------------------------

    def ensure_study(self, name: str, settings: Mapping[str, Any]) -> int:
        """The id of study ``name``, created with ``settings`` if new.

        Raises StoreError naming every difference when the stored study has other settings.
        """
        settings = json.loads(json.dumps(settings, sort_keys=True))  # normalise tuples etc.
        with self._write() as conn:
            row = conn.execute(
                "SELECT study_id, settings FROM study WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO study (name, settings, created_at) VALUES (?, ?, ?)",
                    (name, json.dumps(settings, sort_keys=True), _now()),
                )
                return int(cursor.lastrowid)
        study_id, stored = row[0], json.loads(row[1])
        differences = settings_differences(stored, settings)
        if differences:
            raise StoreError(
                f"study {name!r} in {self.path} was created with other settings:\n  "
                + "\n  ".join(differences)
                + "\nRerun with the stored settings to resume it, or pass a new --study name "
                "(results of different configurations are never mixed in one study)."
            )
        return int(study_id)

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

    def add_runs(self, study_id: int, configs: Iterable[Any]) -> int:
        """Add the runs not yet in the study (by key), in the given order; returns how many."""
        rows = []
        now = _now()
        for config in configs:
            d = config_dict(config)
            rows.append(
                (
                    study_id,
                    config_key(config),
                    d["dataset"],
                    d["model"],
                    d["method"],
                    int(d.get("seed", 0)),
                    int(d.get("epochs", 0)),
                    json.dumps(d, sort_keys=True),
                    now,
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
        """Put the study's failed runs back to pending (their epochs are kept); returns how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE run SET status = 'pending', error = NULL, finished_at = NULL "
                "WHERE study_id = ? AND status = 'failed'",
                (study_id,),
            )
            return cursor.rowcount

    def claim_next(
        self,
        study_id: int,
        worker: Worker | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> Claim | None:
        """Atomically hand the next pending run of the study to ``worker``, or None if none is left.

        Runs left 'running' by a dead process (same host: its pid is gone; another host: no
        heartbeat for ``lease_s`` seconds) are put back to pending first.
        """
        claims = self.claim_many(study_id, 1, worker=worker, lease_s=lease_s)
        return claims[0] if claims else None

    def claim_many(
        self,
        study_id: int,
        limit: int,
        take: Callable[[list[dict[str, Any]]], int] | None = None,
        worker: Worker | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> list[Claim]:
        """Atomically claim the next pending run and up to ``limit - 1`` more pending runs of
        the same dataset and model (in run order): a group to train together. Empty if none.

        ``take(configs)`` says how many of those candidates (a prefix, at least 1) to claim;
        it runs inside the transaction, so it must be quick. Dead processes' runs are
        reclaimed first, as in :meth:`claim_next`.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        worker = worker or Worker.current()
        token = uuid.uuid4().hex
        with self._write() as conn:
            self._reclaim(conn, study_id, lease_s)
            first = conn.execute(
                "SELECT dataset, model FROM run "
                "WHERE study_id = ? AND status = 'pending' ORDER BY run_id LIMIT 1",
                (study_id,),
            ).fetchone()
            if first is None:
                return []
            rows = conn.execute(
                "SELECT run_id, run_key, config, attempts FROM run WHERE study_id = ? AND "
                "status = 'pending' AND dataset = ? AND model = ? ORDER BY run_id LIMIT ?",
                (study_id, first[0], first[1], limit),
            ).fetchall()
            configs = [json.loads(row[2]) for row in rows]
            count = len(rows) if take is None else max(1, min(len(rows), int(take(configs))))
            rows, configs = rows[:count], configs[:count]
            conn.executemany(
                "UPDATE run SET status = 'running', claim = ?, host = ?, pid = ?, pid_start = ?, "
                "heartbeat = ?, attempts = attempts + 1, started_at = coalesce(started_at, ?) "
                "WHERE run_id = ?",
                [
                    (token, worker.host, worker.pid, worker.pid_start, time.time(), _now(), row[0])
                    for row in rows
                ],
            )
        return [
            Claim(int(row[0]), row[1], token, config, int(row[3]) + 1)
            for row, config in zip(rows, configs, strict=True)
        ]

    def _reclaim(self, conn: sqlite3.Connection, study_id: int, lease_s: float) -> None:
        stale = self._stale(conn, "study_id = ?", (study_id,), lease_s)
        conn.executemany(
            "UPDATE run SET status = 'pending', claim = NULL, pid = NULL, pid_start = NULL "
            "WHERE run_id = ?",
            [(run_id,) for run_id in stale],
        )

    @staticmethod
    def _stale(
        conn: sqlite3.Connection, where: str, params: tuple[Any, ...], lease_s: float
    ) -> list[int]:
        """Running runs whose process is gone (this host) or silent for ``lease_s`` (others)."""
        here, now, stale = socket.gethostname(), time.time(), []
        for run_id, host, pid, pid_start, heartbeat in conn.execute(
            "SELECT run_id, host, pid, pid_start, heartbeat FROM run JOIN study USING (study_id) "
            f"WHERE status = 'running' AND {where}",
            params,
        ).fetchall():
            if host == here and pid is not None:
                dead = not Worker(host, int(pid), pid_start).is_alive()
            else:
                dead = heartbeat is None or now - heartbeat > lease_s
            if dead:
                stale.append(int(run_id))
        return stale

    def orphaned_runs(
        self, study: str | None = None, lease_s: float = DEFAULT_LEASE_S
    ) -> list[int]:
        """Runs marked running whose process is gone: the next claim hands them out."""
        if study is None:
            return self._stale(self._conn, "1", (), lease_s)
        return self._stale(self._conn, "name = ?", (study,), lease_s)

    def _owned(self, conn: sqlite3.Connection, claim: Claim) -> None:
        row = conn.execute(
            "SELECT status, claim FROM run WHERE run_id = ?", (claim.run_id,)
        ).fetchone()
        if row is None or row[0] != "running" or row[1] != claim.token:
            raise ClaimLost(
                f"run {claim.run_id} is no longer held by this process (it was reclaimed after "
                "its lease expired); its results are left to the process that holds it now."
            )

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
            self._owned(conn, claim)
            conn.execute(
                "INSERT OR REPLACE INTO epoch (run_id, epoch, lr, train_loss, train_acc, "
                "test_loss, test_acc, wall_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (claim.run_id, *values),
            )
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
            self._owned(conn, claim)
            if epochs is not None:
                self._replace_epochs(conn, claim.run_id, epochs)
            conn.execute(
                "UPDATE run SET status = ?, error = ?, claim = NULL, pid = NULL, pid_start = NULL, "
                "environment = coalesce(?, environment), finished_at = ? WHERE run_id = ?",
                (
                    status,
                    error,
                    None if environment is None else json.dumps(environment, sort_keys=True),
                    _now(),
                    claim.run_id,
                ),
            )

    def release_run(self, claim: Claim) -> None:
        """Give a claimed run back (pending) so a later `annealbench run` continues it."""
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
        self.add_runs(study_id, [config])
        key = config_key(config)
        with self._write() as conn:
            run_id = conn.execute(
                "SELECT run_id FROM run WHERE study_id = ? AND run_key = ?", (study_id, key)
            ).fetchone()[0]
            token = uuid.uuid4().hex
            conn.execute(
                "UPDATE run SET status = 'running', claim = ? WHERE run_id = ?", (token, run_id)
            )
        claim = Claim(int(run_id), key, token, config_dict(config), 1)
        self.finish_run(claim, status, error=error, epochs=epochs, environment=environment)
        return int(run_id)

    @staticmethod
    def _replace_epochs(conn: sqlite3.Connection, run_id: int, epochs: Iterable[Any]) -> None:
        rows = [(run_id, *_record_values(r)) for r in epochs]
        conn.execute("DELETE FROM epoch WHERE run_id = ?", (run_id,))
        conn.executemany(
            "INSERT INTO epoch (run_id, epoch, lr, train_loss, train_acc, test_loss, test_acc, "
            "wall_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    # -- reading -------------------------------------------------------------------------

    def _frame(self, sql: str, study: str | None) -> pd.DataFrame:
        import pandas as pd  # here, so workers that only train never import it

        where = "" if study is None else "WHERE s.name = ?"
        params = () if study is None else (study,)
        try:
            return pd.read_sql_query(sql.format(where=where), self._conn, params=params)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            raise StoreError(f"cannot read results store {self.path}: {exc}") from exc

    def runs_frame(self, study: str | None = None) -> pd.DataFrame:
        """One row per run: run_id, study, dataset, model, method, seed, epochs, status, error,
        plus run_key, batch_size, subset, step_per, attempts, epochs_done, config, environment
        and timestamps."""
        return self._frame(
            """
            SELECT r.run_id, s.name AS study, r.dataset, r.model, r.method, r.seed, r.epochs,
                   r.status, r.error, r.run_key,
                   json_extract(r.config, '$.batch_size') AS batch_size,
                   json_extract(r.config, '$.subset') AS subset,
                   json_extract(r.config, '$.step_per') AS step_per,
                   r.attempts,
                   (SELECT count(*) FROM epoch e WHERE e.run_id = r.run_id) AS epochs_done,
                   r.config, r.environment, r.created_at, r.started_at, r.finished_at
            FROM run r JOIN study s USING (study_id) {where}
            ORDER BY r.run_id
            """,
            study,
        )

    def epochs_frame(self, study: str | None = None) -> pd.DataFrame:
        """One row per stored epoch: run_id, study, dataset, model, method, seed, epoch, lr,
        train_loss, train_acc, test_loss, test_acc, wall_time and the run's status.
        Non-finite metrics (a diverged epoch) read as NaN."""
        frame = self._frame(
            """
            SELECT e.run_id, s.name AS study, r.dataset, r.model, r.method, r.seed, e.epoch,
                   e.lr, e.train_loss, e.train_acc, e.test_loss, e.test_acc, e.wall_time,
                   r.status
            FROM epoch e JOIN run r USING (run_id) JOIN study s USING (study_id) {where}
            ORDER BY e.run_id, e.epoch
            """,
            study,
        )
        for name in _EPOCH_FIELDS:
            frame[name] = frame[name].astype("float64")
        return frame

    def status_frame(self, study: str | None = None) -> pd.DataFrame:
        """Run counts per study, dataset and model: total, done, running, diverged, failed and
        remaining (pending or running)."""
        import pandas as pd

        runs = self.runs_frame(study)
        columns = ["study", "dataset", "model"]
        if runs.empty:
            return pd.DataFrame(
                columns=[*columns, "total", "done", "running", "diverged", "failed", "remaining"]
            )
        counts = pd.crosstab([runs[c] for c in columns], runs["status"])
        counts = counts.reindex(columns=list(STATUSES), fill_value=0)
        counts.insert(0, "total", counts.sum(axis=1))
        counts["remaining"] = counts["pending"] + counts["running"]
        numbers = ["total", "done", "running", "diverged", "failed", "remaining"]
        counts = counts[numbers].reset_index()
        counts.columns.name = None
        return counts
