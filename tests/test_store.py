"""The results store: schema checks, atomic claims, reclaiming dead workers, idempotent writes."""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from annealbench.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Store,
    StoreError,
    Worker,
)
from annealbench.training.config import RunConfig, run_key

SETTINGS = {
    "datasets": ["fashion-mnist"],
    "models": ["nn2"],
    "methods": ["sig+", "str+"],
    "trials": 2,
    "run": {"epochs": 2, "subset": 256},
}


def configs(methods=("sig+", "str+"), seeds=(0, 1), epochs=2) -> list[dict]:
    return [
        {"dataset": "fashion-mnist", "model": "nn2", "method": m, "seed": s, "epochs": epochs}
        for s in seeds
        for m in methods
    ]


def record(epoch: int, acc: float = 50.0) -> dict:
    return {
        "epoch": epoch,
        "lr": 0.1 / epoch,
        "train_loss": 1.0 / epoch,
        "train_acc": acc,
        "test_loss": 1.5 / epoch,
        "test_acc": acc - 1,
        "wall_time": 0.25,
    }


def digest(path: Path) -> tuple[str, float]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "results.sqlite") as s:
        yield s


def test_new_store_is_marked_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "study", "run", "epoch"} <= tables


def test_runs_and_epochs_frames_have_the_documented_columns(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    claim = store.claim_next(study)
    store.record_epoch(claim, record(1))
    runs, epochs = store.runs_frame(), store.epochs_frame("s")
    assert {
        "run_id",
        "study",
        "dataset",
        "model",
        "method",
        "seed",
        "epochs",
        "status",
        "error",
    } <= set(runs.columns)
    assert {
        "run_id",
        "study",
        "dataset",
        "model",
        "method",
        "seed",
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "wall_time",
        "val_loss",
        "val_acc",
        "status",
    } <= set(epochs.columns)
    assert len(runs) == 4 and list(runs["status"]).count("running") == 1
    first = epochs.iloc[0].to_dict()
    assert math.isnan(first.pop("val_loss")) and math.isnan(first.pop("val_acc"))
    assert first == {
        "run_id": claim.run_id,
        "study": "s",
        "dataset": "fashion-mnist",
        "model": "nn2",
        "method": "sig+",
        "seed": 0,
        "status": "running",
        "budget": 100.0,  # a full-budget run (a study's budgets)
        **record(1),
    }
    assert store.epochs_frame("other").empty


def test_add_runs_is_idempotent_and_keeps_grid_order(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    assert store.add_runs(study, configs()) == 4
    assert store.add_runs(study, configs()) == 0
    runs = store.runs_frame("s")
    assert list(zip(runs["seed"], runs["method"], strict=True)) == [
        (0, "sig+"),
        (0, "str+"),
        (1, "sig+"),
        (1, "str+"),
    ]


def test_rerun_with_other_settings_says_what_differs(store: Store) -> None:
    store.ensure_study("s", SETTINGS)
    assert store.ensure_study("s", dict(SETTINGS)) == store.study_id("s")
    changed = {**SETTINGS, "trials": 3, "run": {"epochs": 5, "subset": 256}}
    with pytest.raises(StoreError) as info:
        store.ensure_study("s", changed)
    message = str(info.value)
    assert "trials: stored 2, given 3" in message
    assert "run.epochs: stored 2, given 5" in message
    assert "subset" not in message


def test_claims_hand_out_each_run_once_in_order(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    claims = [store.claim_next(study) for _ in range(4)]
    assert [c.config["method"] for c in claims] == ["sig+", "str+", "sig+", "str+"]
    assert len({c.run_id for c in claims}) == 4
    assert store.claim_next(study) is None  # all running, held by this live process


def claim_group(store: Store, study: int, limit: int, take=None) -> list:
    """The driver's two steps: read a group's candidates, decide how many, claim them."""
    pending = store.pending_group(study, limit)
    count = len(pending) if take is None else take([p.config for p in pending])
    return store.claim_runs(study, [p.run_id for p in pending[:count]])


def test_a_group_claims_pending_runs_of_one_dataset_and_model_at_once(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    lenet = [{**c, "model": "lenet4"} for c in configs(seeds=(0,))]
    store.add_runs(study, configs(seeds=(0,)) + lenet + configs(seeds=(1,)))  # nn2, lenet4, nn2
    first = store.claim_next(study)  # nn2 seed 0 sig+ alone
    group = claim_group(store, study, limit=12)
    # The first pending run's row (nn2), in run order, skipping the lenet4 runs between.
    assert [(c.config["model"], c.config["method"], c.config["seed"]) for c in group] == [
        ("nn2", "str+", 0), ("nn2", "sig+", 1), ("nn2", "str+", 1)
    ]  # fmt: skip
    assert first.run_id not in {c.run_id for c in group}
    assert [c.attempts for c in group] == [1, 1, 1]
    assert len({c.token for c in group}) == 1  # claimed together, in one transaction
    seen: list[list[dict]] = []
    prefix = claim_group(store, study, limit=12, take=lambda cs: seen.append(cs) or 1)
    assert [c["model"] for c in seen[0]] == ["lenet4", "lenet4"]  # the candidates
    assert len(prefix) == 1  # take chose one; the other lenet4 run stays pending
    for claim in group:  # each run of a group is finished or released on its own
        store.record_epoch(claim, record(1))
    store.finish_run(group[0], "done")
    store.release_run(group[1])
    status = store.runs_frame().set_index("run_id")["status"]
    assert status[group[0].run_id] == "done" and status[group[1].run_id] == "pending"
    assert status[group[2].run_id] == "running"
    left = claim_group(store, study, limit=12)  # the lenet4 run left pending: the lowest id
    assert [(c.config["model"], c.attempts) for c in left] == [("lenet4", 1)]
    again = claim_group(store, study, limit=12)  # then the released nn2 run, alone in its row
    assert [(c.run_id, c.attempts) for c in again] == [(group[1].run_id, 2)]
    assert store.pending_group(study, limit=12) == [] and claim_group(store, study, 12) == []
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.pending_group(study, limit=0)


def test_the_group_size_is_decided_with_no_write_lock_held(store: Store) -> None:
    """Between the two steps another connection can write: nothing slow locks the store."""
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    pending = store.pending_group(study, limit=12)
    assert [p.config["method"] for p in pending] == ["sig+", "str+", "sig+", "str+"]
    assert [p.run_key for p in pending] == [run_key(c) for c in configs()]
    assert not store._conn.in_transaction
    other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # would raise 'database is locked' if a writer held it
    other.execute("ROLLBACK")
    other.close()
    claims = store.claim_runs(study, [p.run_id for p in pending[:2]])
    assert [c.run_id for c in claims] == [p.run_id for p in pending[:2]]
    assert [c.config for c in claims] == [p.config for p in pending[:2]]
    assert not store._conn.in_transaction


def test_runs_taken_between_the_two_steps_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as mine, Store(path) as theirs:
        study = mine.ensure_study("s", SETTINGS)
        mine.add_runs(study, configs())
        pending = mine.pending_group(study, limit=12)
        assert [p.run_id for p in theirs.pending_group(study, limit=12)] == [1, 2, 3, 4]
        taken = theirs.claim_runs(study, [pending[1].run_id])  # the other process is quicker
        got = mine.claim_runs(study, [4, 3, 2, 1])  # in the given order, run 2 left out
        assert [c.run_id for c in got] == [4, 3, 1]
        assert mine.claim_runs(study, [p.run_id for p in pending]) == []  # all taken now
        assert {c.token for c in got}.isdisjoint({c.token for c in taken})
        assert theirs.pending_group(study, limit=12) == []
        assert mine.claim_next(study) is None


def _claim_racing(path: Path, run_ids: list[int], start: threading.Barrier, out: list) -> None:
    """One thread with its own connection: claim ``run_ids`` once all threads are ready."""
    try:
        with Store(path) as s:
            start.wait()
            out.extend(c.run_id for c in s.claim_runs(1, run_ids))
    except BaseException as exc:  # reported by the test, not lost in the thread
        out.append(exc)


def test_two_threads_cannot_claim_the_same_run(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        s.add_runs(s.ensure_study("s", SETTINGS), configs(methods=[f"m{i}" for i in range(20)]))
        run_ids = [p.run_id for p in s.pending_group(1, limit=40)]
    assert len(run_ids) == 40
    start, got = threading.Barrier(4), [[], [], [], []]
    threads = [
        threading.Thread(target=_claim_racing, args=(path, run_ids[::step], start, out))
        for step, out in zip((1, -1, 2, 3), got, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    flat = [run_id for out in got for run_id in out]
    assert all(isinstance(run_id, int) for run_id in flat), flat
    assert sorted(flat) == run_ids  # every run claimed exactly once, whoever won it
    with Store(path, readonly=True) as s:
        assert set(s.runs_frame()["status"]) == {"running"}
        assert set(s.runs_frame()["attempts"]) == {1}


def test_a_run_config_and_its_dict_are_one_run(store: Store) -> None:
    """One identity: a RunConfig and its dict key alike, whatever device either names."""
    config = RunConfig("fashion-mnist", "nn2", "sig+", seed=3, epochs=2, device="cpu")
    as_dict = {**config.to_dict(), "device": "cuda:1"}
    assert run_key(config) == run_key(as_dict) == config.key()
    study = store.ensure_study("s", SETTINGS)
    assert store.add_runs(study, [config]) == 1
    assert store.add_runs(study, [as_dict]) == 0  # the same run, not a second one
    run_id = store.add_result(study, as_dict, "done", [record(1)])
    runs = store.runs_frame("s")
    assert list(runs["run_id"]) == [run_id] and list(runs["run_key"]) == [config.key()]
    assert list(runs["status"]) == ["done"]


def _claim_all(path: str, start: Any, out: multiprocessing.Queue) -> None:
    """One runner: create or open the store, add the study's runs, train whatever it gets."""
    start.wait()  # a barrier: all runners open the fresh file at once
    with Store(path) as s:
        study = s.ensure_study("s", SETTINGS)
        s.add_runs(study, configs(methods=[f"m{i}" for i in range(30)], seeds=range(2)))
        got = []
        while (claim := s.claim_next(study)) is not None:
            got.append(claim.run_id)
            s.finish_run(claim, "done", epochs=[record(1)])
        out.put(got)


def test_concurrent_processes_never_get_the_same_run(tmp_path: Path) -> None:
    """Three processes race to create one new store and study, then share its runs."""
    path = tmp_path / "results.sqlite"
    ctx = multiprocessing.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Barrier(3)
    procs = [ctx.Process(target=_claim_all, args=(str(path), start, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    claimed = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    flat = [r for got in claimed for r in got]
    assert sorted(flat) == list(range(1, 61))  # every run exactly once
    with Store(path, readonly=True) as s:
        assert s.study_names() == ["s"]
        assert set(s.runs_frame()["status"]) == {"done"}
        assert len(s.epochs_frame()) == 60


def test_run_of_a_dead_worker_is_reclaimed(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    ghost = Worker(Worker.current().host, int(dead.stdout), "1")
    lost = store.claim_next(study, worker=ghost)
    store.record_epoch(lost, record(1))
    assert store.orphaned_runs() == [lost.run_id] == store.orphaned_runs("s")
    assert store.orphaned_runs("other") == []
    # The same host sees the pid is gone and hands the run out again, stored epoch kept.
    again = store.claim_next(study)
    assert again.run_id == lost.run_id and again.attempts == 2
    assert len(store.epochs_frame()) == 1
    # The dead worker's late writes are refused, not mixed in.
    with pytest.raises(StoreError, match="no longer held"):
        store.record_epoch(lost, record(2))


def test_run_on_another_host_is_reclaimed_only_after_its_lease(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs(seeds=[0], methods=["sig+"]))
    remote = Worker("some-other-host", 1, None)
    claim = store.claim_next(study, worker=remote)
    assert store.claim_next(study, lease_s=3600) is None
    store.heartbeat([claim])
    assert store.claim_next(study, lease_s=3600) is None
    assert store.claim_next(study, lease_s=-1).run_id == claim.run_id


def test_a_reused_pid_does_not_keep_a_run(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs(seeds=[0], methods=["sig+"]))
    me = Worker.current()
    impostor = Worker(me.host, me.pid, "not-my-start-time")  # same pid, other process
    claim = store.claim_next(study, worker=impostor)
    assert store.claim_next(study).run_id == claim.run_id


def test_epoch_writes_are_idempotent(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    claim = store.claim_next(study)
    for _ in range(3):
        store.record_epoch(claim, record(1))
    store.record_epoch(claim, record(2))
    assert list(store.epochs_frame()["epoch"]) == [1, 2]
    store.record_epoch(claim, record(2, acc=70.0))  # a replayed epoch replaces the old row
    assert list(store.epochs_frame()["train_acc"]) == [50.0, 70.0]


def test_finish_replaces_epochs_with_the_full_list(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    claim = store.claim_next(study)
    for epoch in (1, 2, 3):
        store.record_epoch(claim, record(epoch))  # e.g. from an older attempt
    diverged = {**record(2), "train_loss": math.nan, "test_loss": math.inf}
    store.finish_run(
        claim,
        "diverged",
        error="loss is nan",
        epochs=[record(1), diverged],
        environment={"device": "cpu"},
    )
    runs, epochs = store.runs_frame(), store.epochs_frame()
    row = runs.set_index("run_id").loc[claim.run_id]
    assert (row["status"], row["error"], row["epochs_done"]) == ("diverged", "loss is nan", 2)
    assert '"device": "cpu"' in row["environment"]
    assert list(epochs["epoch"]) == [1, 2] and math.isnan(epochs["train_loss"].iloc[1])
    with pytest.raises(StoreError, match="no longer held"):
        store.finish_run(claim, "done")


def test_release_puts_a_run_back_and_failed_runs_can_be_retried(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs(seeds=[0]))
    first = store.claim_next(study)
    store.release_run(first)
    assert store.claim_next(study).run_id == first.run_id
    second = store.claim_next(study)
    store.finish_run(second, "failed", error="RuntimeError: boom")
    assert store.claim_next(study) is None
    assert store.retry_failed(study) == 1
    assert store.claim_next(study).run_id == second.run_id


def test_add_result_builds_a_hand_made_store(store: Store) -> None:
    study = store.ensure_study("hand", {"note": "fixture"})
    run_id = store.add_result(study, configs()[0], "done", [record(1), record(2)])
    assert store.runs_frame("hand").set_index("run_id").loc[run_id, "status"] == "done"
    assert len(store.epochs_frame("hand")) == 2


def test_status_frame_counts_per_dataset_and_model(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    store.finish_run(store.claim_next(study), "done")
    store.finish_run(store.claim_next(study), "diverged")
    store.claim_next(study)
    frame = store.status_frame("s")
    assert list(frame.columns[3:]) == [
        "total",
        "done",
        "running",
        "diverged",
        "failed",
        "remaining",
    ]
    row = frame.iloc[0].to_dict()
    assert row == {
        "study": "s",
        "dataset": "fashion-mnist",
        "model": "nn2",
        "total": 4,
        "running": 1,
        "done": 1,
        "diverged": 1,
        "failed": 0,
        "remaining": 2,
    }


@pytest.mark.parametrize(
    "content",
    [b"hello, this is a text file\n" * 10, b""],
    ids=["text-file", "foreign-sqlite"],
)
def test_foreign_files_are_refused_and_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.sqlite"
    if content:
        path.write_bytes(content)
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match="not an annealbench results store"):
        Store(path)
    with pytest.raises(StoreError, match="not an annealbench results store"):
        Store(path, readonly=True)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        Store(path)
    assert digest(path) == before


def test_read_only_store_is_refused_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        s.add_result(s.ensure_study("s", SETTINGS), configs()[0], "done", [record(1)])
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    before = digest(path)
    with pytest.raises(StoreError, match="read-only"):
        Store(path)
    with Store(path, readonly=True) as s:
        assert len(s.epochs_frame()) == 1
        with pytest.raises(StoreError, match="read-only"):
            s.ensure_study("t", {})
    assert digest(path) == before


def test_read_only_errors_from_sqlite_become_store_errors(store: Store) -> None:
    study = store.ensure_study("s", SETTINGS)
    store.add_runs(study, configs())
    store._conn.execute("PRAGMA query_only = ON")  # sqlite now answers "readonly database"
    with pytest.raises(StoreError, match="read-only.*intact"):
        store.claim_next(study)
    store._conn.execute("PRAGMA query_only = OFF")
    assert set(store.runs_frame()["status"]) == {"pending"}


def test_full_disk_is_a_clear_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        study = s.ensure_study("s", SETTINGS)
        s.add_runs(study, configs())
        claim = s.claim_next(study)
        s.record_epoch(claim, record(1))
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count = {pages}")  # the 'disk' is now full
        many = configs(methods=[f"m{i:03d}-{'x' * 200}" for i in range(400)])
        with pytest.raises(StoreError, match="disk is full.*intact"):
            s.add_runs(study, many)
    with Store(path, readonly=True) as s:
        assert len(s.runs_frame()) == 4
        assert len(s.epochs_frame()) == 1


def test_readonly_open_of_missing_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no results store"):
        Store(tmp_path / "missing.sqlite", readonly=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_store_survives_a_killed_writer(tmp_path: Path) -> None:
    """A process killed in the middle of its writes leaves a consistent store behind."""
    path = tmp_path / "results.sqlite"
    with Store(path) as s:
        study = s.ensure_study("s", SETTINGS)
        s.add_runs(study, configs(methods=["sig+"], seeds=[0]))
    code = (
        "import os, signal\n"
        "from annealbench.store import Store\n"
        f"s = Store({str(path)!r})\n"
        "c = s.claim_next(1)\n"
        "for e in range(1, 10**6):\n"
        "    s.record_epoch(c, {'epoch': e, 'lr': 0.1, 'train_loss': 1, 'train_acc': 1,\n"
        "                       'test_loss': 1, 'test_acc': 1, 'wall_time': 0})\n"
        "    if e == 200: os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert proc.returncode == -9
    with Store(path) as s:
        assert s.runs_frame()["status"].tolist() == ["running"]
        assert s.epochs_frame()["epoch"].tolist() == list(range(1, 201))
        claim = s.claim_next(1)  # the dead writer's run is handed out again
        assert claim is not None and claim.attempts == 2
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
