"""The results store under attack (issue 10): paths that are not regular files, crash
counting for ``--max-retries``, a WAL in a read-only folder, network filesystems, and
read-only folders as root."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from annealbench.cli import app
from annealbench.store import SCHEMA_VERSION, Store, StoreError, Worker, schema
from annealbench.study import _Driver
from annealbench.training.config import RunConfig

B = ["--datasets", "fashion-mnist", "--models", "nn2", "--trials", "1", "--epochs", "1",
     "--subset", "128", "--threads", "1", "--workers", "1"]  # fmt: skip
SETTINGS = {"datasets": ["fashion-mnist"], "models": ["nn2"], "methods": ["sig+"], "trials": 1}
RECORD = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 50.0, "test_loss": 1.5,
          "test_acc": 49.0, "wall_time": 0.25}  # fmt: skip


def annealbench(*args: str | Path) -> subprocess.CompletedProcess:
    """`annealbench ARGS` as a real process, killed if it hangs (a FIFO opened for reading)."""
    return subprocess.run(
        [sys.executable, "-c", "from annealbench.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def without_hanging(call: Callable[[], Any], fifo: Path | None = None) -> BaseException | None:
    """Run ``call`` in a thread; the exception it raised (None if none). Fails the test if
    it blocks, after unblocking a read of ``fifo`` by opening its other end."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("opening the store blocked: it read a FIFO")
    return raised[0] if raised else None


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# -- 1. anything but a regular file is refused and left as it is ---------------------------


def make_node(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "chardev":  # like /dev/null: needs root (the suite runs as root)
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
    else:
        path.mkdir()


IS_KIND = {"fifo": stat.S_ISFIFO, "chardev": stat.S_ISCHR, "folder": stat.S_ISDIR}
NAMED = {"fifo": "FIFO", "chardev": "character device", "folder": "folder"}


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_run_refuses_a_fifo_or_device_store_and_leaves_it(tmp_path: Path, kind: str) -> None:
    """`mkfifo f; annealbench run $B --methods 0.1 --store f` (or a device node)."""
    node = tmp_path / "f"
    make_node(node, kind)
    proc = annealbench("run", *B, "--methods", "0.1", "--store", node)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert NAMED[kind] in proc.stderr and "left untouched" in proc.stderr
    assert IS_KIND[kind](node.lstat().st_mode)  # still the node, not a SQLite file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no checkpoints folder


@pytest.fixture
def dev_null() -> Path:
    """/dev/null, put back as the character device it is should a regression replace it."""
    path = Path("/dev/null")
    before = path.stat()
    assert stat.S_ISCHR(before.st_mode)
    yield path
    if not stat.S_ISCHR(path.lstat().st_mode):  # the bug this guards against: repair it
        for leftover in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{leftover}").unlink(missing_ok=True)
        os.mknod(path, 0o666 | stat.S_IFCHR, before.st_rdev)
        os.chmod(path, 0o666)
        shutil.rmtree("/dev/null.checkpoints", ignore_errors=True)
        pytest.fail("/dev/null was replaced by the store (and has been put back)")


def test_run_refuses_dev_null(dev_null: Path) -> None:
    """As root, `--store /dev/null` used to replace /dev/null with a SQLite file."""
    before = dev_null.stat()
    proc = annealbench("run", *B, "--methods", "0.1", "--store", dev_null)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "/dev/null is a character device" in proc.stderr
    after = dev_null.stat()
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert not Path("/dev/null.checkpoints").exists()


@pytest.mark.parametrize("kind", ["fifo", "chardev", "folder"])
@pytest.mark.parametrize("readonly", [False, True], ids=["write", "read"])
def test_store_refuses_non_regular_paths_without_opening_them(
    tmp_path: Path, kind: str, readonly: bool
) -> None:
    node = tmp_path / "results.sqlite"
    make_node(node, kind)
    error = without_hanging(lambda: Store(node, readonly=readonly), node)
    assert isinstance(error, StoreError) and NAMED[kind] in str(error)
    assert IS_KIND[kind](node.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_a_symlink_to_a_fifo_and_a_fifo_beside_the_store_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "link.sqlite").symlink_to(fifo)
    error = without_hanging(lambda: Store(tmp_path / "link.sqlite"), fifo)
    assert isinstance(error, StoreError) and "FIFO" in str(error)
    Store(tmp_path / "results.sqlite").close()
    wal = tmp_path / "results.sqlite-wal"
    wal.unlink(missing_ok=True)
    os.mkfifo(wal)
    for readonly in (False, True):
        error = without_hanging(lambda r=readonly: Store(tmp_path / "results.sqlite", r), wal)
        assert isinstance(error, StoreError) and "results.sqlite-wal is a FIFO" in str(error)
    assert stat.S_ISFIFO(wal.lstat().st_mode) and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_an_empty_regular_file_still_becomes_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.touch()
    (tmp_path / "link.sqlite").symlink_to(path)
    with Store(tmp_path / "link.sqlite") as s:
        s.ensure_study("s", SETTINGS)
    assert (tmp_path / "link.sqlite").is_symlink()  # the target was replaced, not the link
    with Store(path, readonly=True) as s:
        assert s.study_names() == ["s"]


# -- 2. only deaths of the run's own worker count against --max-retries --------------------


def driver_for(store: Store, max_retries: int = 2) -> tuple[_Driver, int]:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, [RunConfig("fashion-mnist", "nn2", "sig+", epochs=1, device="cpu")])
    ckpt = Path(f"{store.path}.checkpoints")
    return _Driver(store, study, 1, 0, ckpt, max_retries, False, "cpu"), study


def run_row(store: Store) -> dict[str, Any]:
    return store.runs_frame().iloc[0].to_dict()


def test_releases_do_not_count_as_crashes(tmp_path: Path) -> None:
    """Ctrl-C four times (each releases the run), then one worker death: it is retried."""
    with Store(tmp_path / "results.sqlite") as store:
        driver, _ = driver_for(store, max_retries=2)
        for _ in range(4):
            assert driver.next_claim() is not None
            assert len(driver.release_all()) == 1
        claim = driver.next_claim()
        assert (claim.attempts, claim.crashes) == (5, 0)
        driver.lost(claim, "worker process died (exit code -9)")
        row = run_row(store)
        assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 5, 1)
        assert driver.failures == []


def test_a_killed_driver_does_not_count_as_a_crash(tmp_path: Path) -> None:
    """A run left running by a dead process is reclaimed without a crash counted."""
    with Store(tmp_path / "results.sqlite") as store:
        driver, study = driver_for(store)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout  # fmt: skip
        gone = Worker(Worker.current().host, int(dead), None)
        for _ in range(5):
            pending = store.pending_group(study, 1)
            assert store.claim_runs(study, [pending[0].run_id], worker=gone)
        claim = driver.next_claim()
        assert (claim.attempts, claim.crashes) == (6, 0)


def test_max_retries_plus_one_crashes_fail_the_run(tmp_path: Path) -> None:
    with Store(tmp_path / "results.sqlite") as store:
        driver, study = driver_for(store, max_retries=2)
        for crash in (1, 2, 3):
            assert driver.release_all() == []
            claim = driver.next_claim()
            assert claim.crashes == crash - 1
            driver.lost(claim, "worker process died (exit code -9)")
            assert run_row(store)["crashes"] == crash
        row = run_row(store)
        assert row["status"] == "failed"
        assert row["error"] == "worker process died (exit code -9) (3 crashes of its worker)"
        assert driver.failures and "3 crashes" in driver.failures[0]
        assert driver.next_claim() is None
        assert store.retry_failed(study) == 1  # a rerun retries it, with --max-retries anew
        assert (run_row(store)["status"], run_row(store)["crashes"]) == ("pending", 0)


def make_version_1(path: Path) -> None:
    """A store as annealbench wrote it before crash counts (schema version 1)."""
    with Store(path) as s:
        study = s.ensure_study("s", SETTINGS)
        s.add_runs(study, [RunConfig("fashion-mnist", "nn2", "sig+", epochs=1)])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE run DROP COLUMN crashes")
    conn.execute("ALTER TABLE epoch DROP COLUMN val_loss")
    conn.execute("ALTER TABLE epoch DROP COLUMN val_acc")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_a_version_1_store_is_read_as_is_and_upgraded_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    make_version_1(path)
    before = digest(tmp_path)["results.sqlite"]
    with Store(path, readonly=True) as s:
        row = s.runs_frame().iloc[0]
        assert (row["status"], row["attempts"], row["crashes"]) == ("pending", 0, 0)
        assert list(s.epochs_frame().columns[-4:]) == ["val_loss", "val_acc", "status", "budget"]
    assert digest(tmp_path)["results.sqlite"] == before  # still version 1
    with Store(path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[
            0
        ] == str(SCHEMA_VERSION)
        claim = s.claim_next(1)
        assert (claim.attempts, claim.crashes) == (1, 0)
        assert s.record_crash(claim) == 1
        s.record_epoch(claim, {"epoch": 1, "lr": 0.1, "val_loss": 0.5, "val_acc": 80.0})
        assert s.epochs_frame().iloc[0]["val_acc"] == 80.0


# -- 3. a store whose recent results are in its WAL, in a read-only folder ------------------


@pytest.fixture
def wal_copy(tmp_path: Path) -> Path:
    """A store whose every run is still in its -wal file, copied into a chmod 555 folder."""
    source = tmp_path / "live" / "results.sqlite"
    writer = Store(source)
    writer._conn.execute("PRAGMA wal_autocheckpoint = 0")  # everything stays in the WAL
    study = writer.ensure_study("s", SETTINGS)
    for seed in range(3):
        config = RunConfig("fashion-mnist", "nn2", "sig+", seed=seed, epochs=1)
        writer.add_result(study, config, "done", [RECORD])
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("results.sqlite", "results.sqlite-wal"):
        shutil.copyfile(source.parent / name, folder / name)
    writer.close()
    assert (folder / "results.sqlite-wal").stat().st_size > 0
    folder.chmod(0o555)
    yield folder / "results.sqlite"
    folder.chmod(0o755)


def test_a_wal_in_a_read_only_folder_is_read(wal_copy: Path) -> None:
    before = digest(wal_copy.parent)
    with Store(wal_copy, readonly=True) as s:
        runs = s.runs_frame()
        assert runs["seed"].tolist() == [0, 1, 2] and set(runs["status"]) == {"done"}
        assert len(s.epochs_frame("s")) == 3
    assert digest(wal_copy.parent) == before  # nothing written, no -shm made


def test_status_of_a_wal_in_a_read_only_folder_shows_the_runs(wal_copy: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--store", str(wal_copy)])
    assert result.exit_code == 0, result.output
    assert "holds no runs yet" not in result.output
    assert "fashion-mnist" in result.output and "all" in result.output


# -- 4. network filesystems ----------------------------------------------------------------

MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:40 / /mnt/nfs rw,relatime shared:5 - nfs4 server:/export rw,vers=4.2
31 30 8:2 / /mnt/nfs/local rw,relatime shared:6 - ext4 /dev/vdb1 rw
32 22 0:41 / /scratch\\040space rw,relatime - lustre 10.0.0.1@tcp:/fs rw
33 22 0:42 / /home/me/remote rw,nosuid - fuse.sshfs me@host:/ rw
34 22 0:43 / /mnt/nfs rw,relatime - tmpfs tmpfs rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO.replace("/mnt/nfs rw,relatime - tmpfs", "/opt rw - tmpfs"))
    return path


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("/mnt/nfs/results.sqlite", "nfs4"),
        ("/mnt/nfs", "nfs4"),
        ("/mnt/nfs/local/deep/results.sqlite", "ext4"),  # a local disk mounted inside
        ("/mnt/nfsother/results.sqlite", "ext4"),  # a prefix of the name is not the mount
        ("/scratch space/results.sqlite", "lustre"),  # octal escapes decoded
        ("/home/me/remote/x/y.sqlite", "fuse.sshfs"),
        ("/opt/results.sqlite", "tmpfs"),
        ("/results.sqlite", "ext4"),
    ],
)
def test_filesystem_type_reads_the_longest_mount(
    mountinfo: Path, where: str, expected: str
) -> None:
    assert schema.filesystem_type(where, mountinfo=mountinfo) == expected


def test_a_mount_stacked_on_another_wins(tmp_path: Path) -> None:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)  # tmpfs mounted over /mnt/nfs last
    assert schema.filesystem_type("/mnt/nfs/results.sqlite", mountinfo=path) == "tmpfs"


def test_an_unreadable_mountinfo_means_unknown(tmp_path: Path) -> None:
    assert schema.filesystem_type(tmp_path, mountinfo=tmp_path / "missing") is None
    schema.check_local(tmp_path / "results.sqlite", mountinfo=tmp_path / "missing")


def test_the_test_folder_is_not_a_network_filesystem(tmp_path: Path) -> None:
    kind = schema.filesystem_type(tmp_path)
    if sys.platform.startswith("linux"):
        assert kind is not None
    assert kind not in schema.NETWORK_FILESYSTEMS
    schema.check_local(tmp_path / "results.sqlite")


def test_a_store_on_a_network_filesystem_is_refused_for_writing(
    mountinfo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreError, match=r"network filesystem \(nfs4 mounted at /mnt/nfs\)"):
        schema.check_local(Path("/mnt/nfs/results.sqlite"), mountinfo=mountinfo)
    schema.check_local(Path("/mnt/nfs/local/results.sqlite"), mountinfo=mountinfo)
    store = tmp_path / "shared" / "results.sqlite"
    Store(store).close()  # made while the folder was local
    before = digest(store.parent)["results.sqlite"]
    fake = tmp_path / "nfs-mountinfo"
    fake.write_text(f"{MOUNTINFO}40 22 0:50 / {tmp_path} rw - nfs server:/x rw\n")
    monkeypatch.setattr(schema, "MOUNTINFO", str(fake))
    for path in (store, tmp_path / "new" / "results.sqlite"):
        with pytest.raises(
            StoreError, match="network filesystem.*--executor ray.*Nothing was changed"
        ):
            Store(path)
    assert not (tmp_path / "new").exists()
    with Store(store, readonly=True) as s:  # reading stays allowed
        assert s.study_names() == []
    assert digest(store.parent)["results.sqlite"] == before


# -- 5. read-only folders, even for root -----------------------------------------------------


def test_a_chmod_555_folder_is_refused_even_for_root(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    Store(folder / "old.sqlite").close()
    folder.chmod(0o555)
    before = digest(folder)
    try:
        for name in ("new.sqlite", "old.sqlite"):
            with pytest.raises(StoreError, match=r"folder .*ro is read-only \(mode dr-xr-xr-x\)"):
                Store(folder / name)
        with Store(folder / "old.sqlite", readonly=True) as s:
            assert s.study_names() == []
        assert digest(folder) == before
    finally:
        folder.chmod(0o755)


def test_run_into_a_chmod_555_folder_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    try:
        proc = annealbench("run", *B, "--methods", "0.1", "--store", folder / "s.sqlite")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "read-only" in proc.stderr and list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_store_with_flipped_bytes_in_its_schema_is_one_clear_error(tmp_path: Path) -> None:
    """Defect 6: a damaged schema is a one-line error, exit 2, and the file stays as it is."""
    from typer.testing import CliRunner

    from annealbench.cli import app
    from annealbench.study import Study, run_study

    store = tmp_path / "s.sqlite"
    grid = Study("s", ("fashion-mnist",), ("nn2",), ("sig+",), 1,
                 {"epochs": 1, "subset": 128, "device": "cpu"})  # fmt: skip
    run_study(grid, store, progress=False, batched="off")
    data = bytearray(store.read_bytes())
    at = data.find(b"CREATE TABLE run")
    for k in range(at + 13, at + 20):
        data[k] ^= 0xFF
    store.write_bytes(bytes(data))
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    grid_args = ["--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+",
                 "--trials", "1", "--epochs", "1", "--subset", "128", "--workers", "1"]  # fmt: skip
    for args in (["status"], ["export", "--out", str(tmp_path / "x")], ["report"],
                 ["run", *grid_args]):  # fmt: skip
        result = CliRunner().invoke(app, [*args, "--store", str(store)])
        assert result.exit_code == 2, (args, result.output)
        assert "malformed database schema" in result.output
        assert "Traceback" not in result.output
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
