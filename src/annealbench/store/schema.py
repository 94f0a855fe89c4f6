"""The store's file: its schema, and opening, creating and checking it; the write transaction.

Every write is one ``BEGIN IMMEDIATE`` transaction and the file is in WAL mode, so any
number of processes can share one store.

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
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from annealbench.errors import StoreError

__all__ = [
    "APPLICATION_ID",
    "EPOCH_FIELDS",
    "FINAL_STATUSES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATUSES",
    "StoreFile",
    "check_header",
    "check_version",
    "check_writable",
    "connect",
    "create",
    "now",
    "translate",
]

#: ``PRAGMA application_id`` of every annealbench store: the bytes ``ANLB``.
APPLICATION_ID = 0x414E4C42
#: Bumped whenever the schema changes; a store with a larger version is refused.
SCHEMA_VERSION = 1
#: Statuses a run can have; the last three are final.
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINAL_STATUSES = ("done", "diverged", "failed")
#: The metric columns of ``epoch``, after its key (run_id, epoch).
EPOCH_FIELDS = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time")

_SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = f"""
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


def now() -> str:
    """The current UTC time as stored in the ``*_at`` columns."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_version(path: Path, version: int) -> None:
    """Refuse a store written by a newer annealbench."""
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has store schema version {version}, newer than this annealbench "
            f"understands ({SCHEMA_VERSION}); upgrade annealbench to read it. "
            "The file was left untouched."
        )


def check_header(path: Path) -> None:
    """Refuse foreign files by their header alone, so they are never opened for writing."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        raise StoreError(
            f"{path} is not an annealbench results store (not a SQLite database); "
            "pass another --store path. The file was left untouched."
        )
    app_id = int.from_bytes(header[68:72], "big")
    version = int.from_bytes(header[60:64], "big")
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is a SQLite database of another application "
            f"(application_id {app_id:#x}), not an annealbench results store; "
            "pass another --store path. The file was left untouched."
        )
    check_version(path, version)


def check_writable(path: Path, exists: bool) -> None:
    """A store whose file or folder has no write permission is refused up front.

    The file mode is checked as well as ``os.access``: root may write anything, but a
    file with every write bit removed was meant to stay as it is.
    """
    if exists:
        mode = path.stat().st_mode
        if not os.access(path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP):
            raise StoreError(
                f"results store {path} is read-only (mode {stat.filemode(mode)}); "
                "make it writable (chmod u+w) or pass another --store. Nothing was changed."
            )
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder {folder}: {exc.strerror}") from exc
    if not os.access(folder, os.W_OK):
        raise StoreError(
            f"the folder {folder} is read-only; SQLite needs to write its journal next to "
            "the store. Pass a --store in a writable folder."
        )


def translate(path: Path, exc: sqlite3.Error, action: str) -> StoreError:
    """A StoreError that says what went wrong with the file and what is safe."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return StoreError(
            f"cannot {action} results store {path}: it is read-only ({exc}). "
            "Everything stored before is intact; make it writable or pass another --store."
        )
    if "disk is full" in text or "database or disk is full" in text:
        return StoreError(
            f"cannot {action} results store {path}: the disk is full. The failed write "
            "was rolled back and everything stored before it is intact; free space and rerun "
            "the same command to resume."
        )
    if "locked" in text or "busy" in text:
        return StoreError(
            f"results store {path} stayed locked by another process for 60 s ({exc}); "
            "retry when it is less busy."
        )
    return StoreError(f"cannot {action} results store {path}: {exc}")


def _build(tmp: Path) -> None:
    """Write a complete, empty store (schema, pragmas, meta rows) to ``tmp``."""
    from annealbench import __version__

    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("BEGIN")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("app", "annealbench"),
                ("schema_version", str(SCHEMA_VERSION)),
                ("created_at", now()),
                ("created_by", __version__),
            ],
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
    finally:
        conn.close()


def create(path: Path) -> None:
    """Build a new store beside ``path`` and link it into place in one step.

    Processes racing to create the same store never see a half-made file: each builds
    its own, exactly one link succeeds, and the others open the winner's file.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.new")
    try:
        _build(tmp)
        if path.exists():  # an empty file stands there: a store may replace it
            if path.stat().st_size == 0:
                os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
    except sqlite3.Error as exc:
        raise translate(path, exc, "create") from exc
    except OSError as exc:
        raise StoreError(f"cannot create results store {path}: {exc.strerror}") from exc
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _open_uri(path: Path, option: str) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?{option}"
    conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) with foreign keys on."""
    try:
        if readonly:
            try:
                conn = _open_uri(path, "mode=ro")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # A WAL database in a read-only folder cannot create its -shm file;
                # immutable=1 reads the main file alone (a writer there would be ignored).
                conn = _open_uri(path, "immutable=1")
        else:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise translate(path, exc, "open") from exc
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Refuse an opened file without annealbench metadata; a writer switches it to WAL."""
    try:
        check_version(path, conn.execute("PRAGMA user_version").fetchone()[0])
        app = conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(
            f"{path} is not a readable annealbench results store ({exc}); "
            "the file was left untouched."
        ) from exc
    if app is None or app[0] != "annealbench":
        raise StoreError(f"{path} lacks annealbench metadata; the file was left untouched.")
    if not readonly:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise translate(path, exc, "open") from exc


class StoreFile:
    """An opened results file: ``StoreFile(path)`` creates it if missing; ``readonly=True``
    only reads. The base of :class:`annealbench.store.Store`."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            check_header(self.path)
        elif readonly:
            raise StoreError(f"no results store at {self.path}; run `annealbench run` first")
        if not readonly:
            check_writable(self.path, exists)
            if not exists:
                create(self.path)
                check_header(self.path)
        self._conn = connect(self.path, readonly)
        _check_schema(self._conn, self.path, readonly)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _translate(self, exc: sqlite3.Error, action: str) -> StoreError:
        """:func:`translate` for this file."""
        return translate(self.path, exc, action)

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
