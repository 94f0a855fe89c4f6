"""The store's file: its schema, and opening, creating and checking it; the write transaction.

Every write is one ``BEGIN IMMEDIATE`` transaction and the file is in WAL mode, so any
number of processes on one host can share one store. WAL mode needs memory shared by those
processes, so a store on a network filesystem (:data:`NETWORK_FILESYSTEMS`, found by
:func:`filesystem_type`) is refused for writing; reading it there is allowed. Only a regular
file (or a path where nothing is yet) is ever opened: a FIFO, a device, a folder or a socket
is refused before anything opens it.

Schema (``PRAGMA application_id`` = :data:`APPLICATION_ID`, ``PRAGMA user_version`` =
:data:`SCHEMA_VERSION`):

``meta(key, value)``
    ``app`` = ``annealbench``, ``schema_version``, ``created_at``, ``created_by`` (package version).
``study(study_id, name UNIQUE, settings JSON, created_at)``
    One row per study; ``settings`` is its grid and options. A rerun must match them.
``run(run_id, study_id, run_key, dataset, model, method, seed, epochs, config JSON, status,
error, attempts, claim, host, pid, pid_start, heartbeat, environment JSON, created_at,
started_at, finished_at, crashes)``
    One row per (study, configuration); ``status`` is pending, running, done, diverged or
    failed; ``claim``/``host``/``pid``/``heartbeat`` identify the process training it.
    ``attempts`` counts claims (every start or resume); ``crashes`` counts deaths of the
    worker process training it, what ``--max-retries`` limits (schema version 2; a version 1
    store gains the column, at 0, when it is opened for writing).
``epoch(run_id, epoch, lr, train_loss, train_acc, test_loss, test_acc, wall_time, val_loss,
val_acc)``
    One row per finished epoch (1-based); accuracies in percent, losses per sample. The
    validation columns (schema version 3; NULL for a run without a validation split) hold the
    held-out part of the training set; a version 2 store gains them when opened for writing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import stat
import tempfile
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
    "MOUNTINFO",
    "NETWORK_FILESYSTEMS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "STATUSES",
    "StoreFile",
    "check_header",
    "check_local",
    "check_regular",
    "check_version",
    "check_writable",
    "connect",
    "create",
    "filesystem_type",
    "folder_writable",
    "migrate",
    "now",
    "translate",
]

#: ``PRAGMA application_id`` of every annealbench store: the bytes ``ANLB``.
APPLICATION_ID = 0x414E4C42
#: Bumped whenever the schema changes; a store with a larger version is refused.
SCHEMA_VERSION = 3
#: Statuses a run can have; the last three are final.
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINAL_STATUSES = ("done", "diverged", "failed")
#: The metric columns of ``epoch``, after its key (run_id, epoch).
EPOCH_FIELDS = (
    "lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time", "val_loss", "val_acc",
)  # fmt: skip

#: Filesystem types (as ``/proc/self/mountinfo`` names them) that several hosts share: a
#: store there is refused for writing, as SQLite's WAL mode needs one host's shared memory.
NETWORK_FILESYSTEMS = frozenset(
    {
        "9p", "afs", "beegfs", "ceph", "cifs", "coda", "davfs", "fuse.ceph", "fuse.ceph-fuse",
        "fuse.davfs2", "fuse.gcsfuse", "fuse.glusterfs", "fuse.juicefs", "fuse.rclone",
        "fuse.s3fs", "fuse.sshfs", "gfs2", "glusterfs", "gpfs", "lustre", "ncpfs", "nfs",
        "nfs4", "ocfs2", "orangefs", "panfs", "pvfs2", "smb2", "smb3", "smbfs", "sshfs",
        "wekafs",
    }
)  # fmt: skip

#: Where :func:`filesystem_type` reads the mounts by default (Linux).
MOUNTINFO = "/proc/self/mountinfo"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
_SIDE_FILES = ("-wal", "-shm", "-journal")
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

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
    crashes     INTEGER NOT NULL DEFAULT 0,
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
    val_loss   REAL,
    val_acc    REAL,
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


def check_regular(path: Path) -> int | None:
    """The size of the regular file at ``path`` (symlinks followed), None if nothing is there.

    Anything else (a FIFO, a device such as /dev/null, a folder, a socket), at ``path`` or at
    one of SQLite's side files (``-wal``, ``-shm``, ``-journal``), is refused by its
    ``stat`` alone: it is never opened (reading a FIFO would hang) nor replaced.
    """
    size = None
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in _SIDE_FILES)):
        try:
            info = candidate.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise StoreError(f"cannot inspect {candidate}: {exc.strerror}") from exc
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _KINDS if test(info.st_mode)), "not a regular file")
            raise StoreError(
                f"{candidate} is {kind}, not a results store file; pass a --store path to a "
                "regular file or to a new file in a folder. It was left untouched."
            )
        if candidate == path:
            size = info.st_size
    return size


def _unescape(field: str) -> str:
    """A mountinfo path field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mount_of(path: Path, mountinfo: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(mount point, filesystem type) of the mount holding ``path``, or None if unknown."""
    try:
        lines = Path(mountinfo).read_text(errors="replace").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        point = _unescape(fields[4])
        inside = point == "/" or target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):  # later mounts stack on top
            best = (point, tail[0])
    return best


def filesystem_type(
    path: str | os.PathLike[str], mountinfo: str | os.PathLike[str] | None = None
) -> str | None:
    """The type (``ext4``, ``nfs4``, ``lustre``...) of the filesystem holding ``path``.

    Read from ``mountinfo`` (default :data:`MOUNTINFO`): the mount whose mount point
    is the longest prefix of the resolved path. None where that is unknown (not Linux).
    """
    found = _mount_of(Path(path), mountinfo or MOUNTINFO)
    return None if found is None else found[1]


def check_local(path: Path, mountinfo: str | os.PathLike[str] | None = None) -> None:
    """Refuse to write a store on a network filesystem (:data:`NETWORK_FILESYSTEMS`).

    SQLite's WAL mode coordinates writers through memory shared on one host, and network
    filesystems' locks are unreliable: processes on several hosts writing one store there
    can corrupt it. Opening such a store read-only is allowed (nothing is written).
    """
    found = _mount_of(path.parent, mountinfo or MOUNTINFO)
    if found is None or found[1] not in NETWORK_FILESYSTEMS:
        return
    raise StoreError(
        f"results store {path} is on a network filesystem ({found[1]} mounted at {found[0]}), "
        "where SQLite cannot keep the store safe from corruption. Keep the store on a local "
        "disk (e.g. --store /tmp/annealbench.sqlite or node-local scratch), run the study "
        "from one driver there (--executor ray spreads its runs over several machines), and "
        "copy the file where you need it afterwards; reading a store on a network filesystem "
        "(status, export, report) is fine. Nothing was changed."
    )


def check_writable(path: Path, exists: bool) -> None:
    """A store whose file or folder has no write permission is refused up front.

    The modes are checked as well as ``os.access``: root may write anything, but a file
    without user and group write bits, or a folder without any write bit (``chmod 555``),
    was meant to stay as it is.
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
    check_folder_writable(folder)


def check_folder_writable(folder: Path) -> None:
    """Refuse a store in an existing folder that may not be written (writes nothing)."""
    if folder.is_dir() and not folder_writable(folder):
        raise StoreError(
            f"the folder {folder} is read-only (mode {stat.filemode(folder.stat().st_mode)}); "
            "SQLite needs to write its journal next to the store. Make the folder writable "
            "(chmod u+w) or pass a --store in a writable folder. Nothing was changed."
        )


def folder_writable(folder: Path) -> bool:
    """Whether ``folder`` may be written: ``os.access`` and, for root, its write bits."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & _WRITE_BITS)


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
    its own, exactly one link succeeds, and the others open the winner's file. An empty
    regular file at ``path`` counts as no store and is replaced; anything else that is not
    a regular file is refused (:func:`check_regular`), checked again just before the swap.
    """
    target = Path(os.path.realpath(path))  # a symlink's target is replaced, not the link
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.new")
    try:
        _build(tmp)
        size = check_regular(target)
        if size == 0:  # an empty file stands there: a store may replace it
            os.replace(tmp, target)
        elif size is None:
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, target)
    except sqlite3.Error as exc:
        raise translate(path, exc, "create") from exc
    except OSError as exc:
        raise StoreError(f"cannot create results store {path}: {exc.strerror}") from exc
    finally:
        for suffix in ("", *_SIDE_FILES):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _open_uri(path: Path, option: str) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?{option}"
    conn = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


def _snapshot(path: Path) -> sqlite3.Connection:
    """An in-memory copy of the store with its ``-wal`` file replayed; the originals are
    only read. For a store in a folder that may not be written, where SQLite cannot make
    the ``-shm`` file it needs to read the WAL in place."""
    with tempfile.TemporaryDirectory(prefix="annealbench-store-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        source = sqlite3.connect(copy, isolation_level=None)
        memory = sqlite3.connect(":memory:", isolation_level=None)
        try:
            source.backup(memory)
        except BaseException:
            memory.close()
            raise
        finally:
            source.close()
    return memory


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that sees every committed write, WAL included."""
    if folder_writable(path.parent):
        conn = None
        try:
            conn = _open_uri(path, "mode=ro")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:  # e.g. the -shm file cannot be made
            if conn is not None:
                conn.close()
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:  # recent writes are still in the WAL
        try:
            return _snapshot(path)
        except OSError as exc:
            raise StoreError(
                f"cannot read the recent results of {path}: they are in {wal}, which SQLite "
                f"cannot read in this read-only folder, and copying it failed ({exc}). Copy "
                "the store and its -wal file to a writable folder and read the copy."
            ) from exc
    # No WAL to replay: immutable=1 reads the main file alone, without making a -shm file.
    return _open_uri(path, "immutable=1")


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) with foreign keys on.

    Read-only, in a folder that may not be written (or by root, ``chmod 555``), nothing is
    created beside the store: a store with a non-empty ``-wal`` file is read from an
    in-memory copy with the WAL replayed, else the main file is read as immutable.
    """
    try:
        if readonly:
            conn = _connect_readonly(path)
        else:
            conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise translate(path, exc, "open") from exc
    return conn


#: Columns added since version 1: (table, column, type). An upgrade adds the missing ones.
_ADDED_COLUMNS = (
    ("run", "crashes", "INTEGER NOT NULL DEFAULT 0"),  # version 2
    ("epoch", "val_loss", "REAL"),  # version 3
    ("epoch", "val_acc", "REAL"),  # version 3
)


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a writable store of an older schema version to :data:`SCHEMA_VERSION`.

    Version 1 -> 2 adds ``run.crashes`` (0 for every run); 2 -> 3 adds ``epoch.val_loss`` and
    ``epoch.val_acc`` (NULL: no validation split). One transaction: a crash leaves
    the old version intact, and processes opening the store at once upgrade it once.
    """
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate(path, exc, "upgrade") from exc


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
        exists = bool(check_regular(self.path))  # an empty file counts as no store
        if exists:
            check_header(self.path)
        elif readonly:
            raise StoreError(f"no results store at {self.path}; run `annealbench run` first")
        if not readonly:
            check_local(self.path)
            check_writable(self.path, exists)
            if not exists:
                create(self.path)
                check_header(self.path)
        self._conn = connect(self.path, readonly)
        _check_schema(self._conn, self.path, readonly)
        if not readonly:
            migrate(self._conn, self.path)
        self._run_columns = {row[1] for row in self._conn.execute("PRAGMA table_info(run)")}
        self._epoch_columns = {row[1] for row in self._conn.execute("PRAGMA table_info(epoch)")}

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
