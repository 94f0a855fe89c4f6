"""The study: presets, the grid, resume after SIGKILL and Ctrl-C, concurrent runners, Ray,
and every bad input of ``annealbench run | status | presets | export``.

Training uses real Fashion-MNIST on 512 images, nn2, 3 epochs: small enough to stay fast on
two CPU cores, real enough that resuming must reproduce every number bit for bit. These
tests train one run at a time (``--batched off``); batched groups are tested in
tests/test_study_batched.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from annealbench.cli import app
from annealbench.store import SCHEMA_VERSION, Store, StoreError
from annealbench.study import (
    Study,
    StudyError,
    estimate,
    forward_mflops,
    load_preset,
    paper_methods,
    preset_names,
    preset_table,
    run_study,
)

METHODS = ("sig+", "adam")
EPOCHS = 3
# One worker: these tests watch the study's own process (monkeypatches, kills, counts).
GRID_ARGS = ["--workers", "1", "--datasets", "fashion-mnist", "--models", "nn2",
             "--methods", ",".join(METHODS), "--trials", "2", "--epochs", str(EPOCHS),
             "--subset", "512", "--threads", "1",
             "--no-progress", "--batched", "off"]  # fmt: skip
METRICS = ["lr", "train_loss", "train_acc", "test_loss", "test_acc"]
TINY = Study(
    name="default",
    datasets=("fashion-mnist",),
    models=("nn2",),
    methods=METHODS,
    trials=2,
    options={"epochs": EPOCHS, "subset": 512},
)

runner = CliRunner()


def _signals_as_from_a_terminal() -> None:
    """In the child, before exec: SIGINT and SIGTERM at their defaults. A background child of
    a non-interactive shell starts with SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so a Ctrl-C test would see a process that cannot be interrupted."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def cli(*args: str | Path, prelude: str = "") -> subprocess.Popen:
    """`annealbench ARGS` as a real process (so it can be killed); ``prelude`` is Python run
    before the command (to instrument it)."""
    return subprocess.Popen(
        [sys.executable, "-c", f"{prelude}\nfrom annealbench.cli import main; main()",
         *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True, preexec_fn=_signals_as_from_a_terminal,
    )  # fmt: skip


def metrics(store: Path) -> pd.DataFrame:
    """Every stored number that training determines (not wall time), in grid order."""
    with Store(store, readonly=True) as s:
        epochs = s.epochs_frame()
    keys = ["dataset", "model", "method", "seed", "epoch"]
    return epochs[keys + METRICS + ["status"]].sort_values(keys).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run uninterrupted, in this process."""
    store = tmp_path_factory.mktemp("reference") / "results.sqlite"
    outcome = run_study(TINY, store, threads=1, progress=False, batched="off")
    assert outcome.counts == {"done": 4} and not outcome.interrupted
    return store


# -- presets and the grid ----------------------------------------------------------------


def test_presets_reproduce_the_papers_grids() -> None:
    assert set(preset_names()) == {"quick", "paper-mnist", "paper-fashion-mnist", "paper-svhn",
                                   "paper-cifar10", "paper-cifar100", "modern-quick",
                                   "modern-fashion-mnist"}  # fmt: skip
    for name in preset_names():
        load_preset(name).validate()
    table2 = load_preset("paper-fashion-mnist")
    assert table2.models == ("nn2", "nn3", "lenet4", "vgg9")
    assert table2.methods == paper_methods() and len(table2.methods) == 12
    assert table2.methods[:3] == ("0.1", "0.01", "0.001") and table2.methods[-1] == "sig+"
    assert (table2.trials, table2.options["epochs"], table2.n_runs) == (10, 100, 480)
    deep = [load_preset(f"paper-{d}") for d in ("svhn", "cifar10", "cifar100")]
    assert sum(s.n_runs for s in deep) == 1800  # behind Table 3
    assert deep[0].models == ("vgg19", "resnet18", "resnet50", "densenet121", "googlenet")


def test_preset_cost_tables_match_the_models() -> None:
    """The forward FLOPs the estimates use are what the models compute (the deep ones are
    checked through resnet18 only: counting all five takes a minute on two cores)."""
    counted = {}
    for name in preset_names():
        table, study = preset_table(name), load_preset(name)
        costs = table["cost"]["forward_mflops"]
        assert set(costs) == set(study.models), name
        for model in set(study.models) & {"nn2", "nn3", "lenet4", "vgg9", "resnet18"}:
            key = (model, study.datasets[0])
            counted.setdefault(key, forward_mflops(*key))
            assert costs[model] == pytest.approx(counted[key], rel=1e-3), (name, model)
        assert estimate(name)["pflop"] > 0


def test_estimate_scales_with_the_grid() -> None:
    quick, table2 = estimate("quick"), estimate("paper-fashion-mnist")
    assert quick["runs"] == 48 and table2["runs"] == 480
    assert table2["run_epochs"] == 48_000
    assert table2["pflop"] > 100 * quick["pflop"]


def test_grid_is_seed_major_and_settings_leave_out_the_device() -> None:
    configs = TINY.configs()
    assert [(c.seed, c.method) for c in configs] == [
        (0, "sig+"), (0, "adam"), (1, "sig+"), (1, "adam")
    ]  # fmt: skip
    settings = TINY.settings()
    assert settings["trials"] == 2 and settings["run"]["subset"] == 512
    assert "device" not in settings["run"]


def test_settings_record_every_user_method_whatever_the_order(tmp_path: Path) -> None:
    from annealbench import methods

    methods.register(methods.Method("mine", "sgd", "cosine", {"lr_up": 0.05}), replace=True)
    first = dataclasses.replace(TINY, methods=("sig+", "mine")).settings()
    assert first["custom_methods"]["mine"]["schedule_settings"] == {"lr_up": 0.05}
    assert "custom_method" not in first["run"]
    second = dataclasses.replace(TINY, methods=("mine", "sig+")).settings()
    assert second["run"] == first["run"] and second["custom_methods"] == first["custom_methods"]
    # Editing a user method is a conflict with the stored study, not a second set of runs.
    store = Store(tmp_path / "s.sqlite")
    store.ensure_study("s", first)
    methods.register(methods.Method("mine", "sgd", "cosine", {"lr_up": 0.2}), replace=True)
    edited = dataclasses.replace(TINY, methods=("sig+", "mine")).settings()
    with pytest.raises(StoreError, match="custom_methods"):
        store.ensure_study("s", edited)
    store.close()


def test_preset_overrides_replace_its_values() -> None:
    study = load_preset("quick", trials=1, methods=("sig+",), epochs=1, subset=None)
    assert (study.trials, study.methods, study.options["epochs"]) == (1, ("sig+",), 1)
    assert study.options["subset"] == 10000  # None means "not given"


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (Study("s", ("fashion-mnist",), ("nn2",), (), 2), "zero runs.*--methods"),
        (Study("s", ("fashion-mnist",), ("nn2",), ("sig+",), 0), "zero runs.*--trials 0"),
        (Study("s", ("fashion-mnist",), ("nn9",), ("sig+",), 1), "unknown model 'nn9'; valid"),
        (Study("s", ("fashion-mnist",), ("nn2",), ("sig++",), 1), "unknown method 'sig\\+\\+'"),
        (Study("s", ("fashion-mnist",), ("nn2",), ("sig+", "sig+"), 1), "listed twice"),
        (Study("s", ("fashion-mnist",), ("nn2",), ("sig+",), 1, {"lr": 1}), "unknown run opt"),
    ],
)
def test_bad_grids_are_refused(study: Study, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        study.validate()


# -- running and resuming ----------------------------------------------------------------


def test_reference_study_is_complete(reference: Path) -> None:
    frame = metrics(reference)
    assert len(frame) == 12 and set(frame["status"]) == {"done"}
    assert frame["test_acc"].between(0, 100).all() and frame["lr"].gt(0).all()
    with Store(reference, readonly=True) as s:
        runs = s.runs_frame()
    env = json.loads(runs["environment"].iloc[0])
    assert env["device"] == "cpu" and env["threads"] == 1 and env["torch"]
    assert runs["attempts"].tolist() == [1] * 4
    # Finished runs leave no checkpoint, and the study no empty checkpoint folder.
    assert not Path(f"{reference}.checkpoints").exists()


def test_rerun_skips_finished_runs(reference: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    store.write_bytes(reference.read_bytes())
    before = metrics(store)
    result = runner.invoke(app, ["run", *GRID_ARGS, "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "4 done" in result.output
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["attempts"].tolist() == [1] * 4  # nothing trained again
    pd.testing.assert_frame_equal(metrics(store), before)


def wait_until(
    store: Path, proc: subprocess.Popen, ready: Callable[[sqlite3.Connection], bool]
) -> bool:
    """Poll the store (read-only) until ``ready(connection)``; False if the process ended or
    two minutes passed first."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
            try:
                if ready(conn):
                    return True
            finally:
                conn.close()
        time.sleep(0.005)
    return False


def wait_for(store: Path, proc: subprocess.Popen, sql: str, at_least: int) -> bool:
    """Poll the store until ``sql`` counts ``at_least`` rows (or the process ends)."""
    return wait_until(store, proc, lambda conn: conn.execute(sql).fetchone()[0] >= at_least)


def run_checkpoints(folder: Path, run_id: int) -> list[Path]:
    """The checkpoint files of run ``run_id`` in a study's checkpoint folder."""
    return list(folder.glob(f"run{run_id:06d}-*.pt"))


def checkpointed_wall_times(folder: Path) -> dict[tuple[int, int], float]:
    """``(run id, epoch) -> wall time`` of every epoch the study's checkpoints hold. A run
    resumed from its checkpoint stores these very numbers; one restarted times them anew."""
    import torch

    times = {}
    for path in folder.glob("run*.pt"):
        state = torch.load(path, weights_only=True)
        times.update({(int(path.name[3:9]), r["epoch"]): r["wall_time"] for r in state["records"]})
    return times


def stored_wall_times(store: Path) -> dict[tuple[int, int], float]:
    """``(run id, epoch) -> wall time`` of every stored epoch."""
    with Store(store, readonly=True) as s:
        epochs = s.epochs_frame()
    rows = zip(epochs["run_id"], epochs["epoch"], epochs["wall_time"], strict=True)
    return {(int(run_id), int(epoch)): wall for run_id, epoch, wall in rows}


def resume_here(store: Path) -> None:
    """Rerun the same command (in this process: the same code, without a second torch import)."""
    result = runner.invoke(app, ["run", *GRID_ARGS, "--store", str(store)])
    assert result.exit_code == 0, result.output


def test_sigkill_mid_study_then_resume_equals_uninterrupted(
    reference: Path, tmp_path: Path
) -> None:
    import torch

    store = tmp_path / "results.sqlite"
    checkpoints = Path(f"{store}.checkpoints")

    def mid_run(conn: sqlite3.Connection) -> bool:
        """A run is done and the next one is mid-way: running, some but not all of its
        epochs stored, its checkpoint on disk."""
        if not conn.execute("SELECT count(*) FROM run WHERE status = 'done'").fetchone()[0]:
            return False
        running = conn.execute(
            "SELECT run_id FROM run AS r WHERE status = 'running' AND "
            "(SELECT count(*) FROM epoch AS e WHERE e.run_id = r.run_id) BETWEEN 1 AND ?",
            (EPOCHS - 1,),
        ).fetchall()
        return any(run_checkpoints(checkpoints, run_id) for (run_id,) in running)

    proc = cli("run", *GRID_ARGS, "--store", store)
    assert wait_until(store, proc, mid_run), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    with Store(store, readonly=True) as s:
        runs, epochs = s.runs_frame(), s.epochs_frame()
    # Killed mid-run: one run was in flight, with epochs stored, when the process died.
    assert 0 < (runs["status"] == "done").sum() < 4, runs["status"].tolist()
    (run_id,) = runs.loc[runs["status"] == "running", "run_id"]
    status = runner.invoke(app, ["status", "--store", str(store)]).output
    assert "1 of the running runs lost" in status, status
    # Its checkpoint is at least as far as the store: nothing stored is lost.
    (checkpoint,) = run_checkpoints(checkpoints, run_id)
    saved = torch.load(checkpoint, weights_only=True)["epoch"]
    stored = (epochs["run_id"] == run_id).sum()
    assert 1 <= stored <= saved <= EPOCHS, (stored, saved)
    kept = {**stored_wall_times(store), **checkpointed_wall_times(checkpoints)}
    resume_here(store)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))
    # Finished runs were skipped and the killed one continued from its checkpoint: every
    # epoch stored or checkpointed before the kill is kept as it was, not trained again.
    after = stored_wall_times(store)
    assert {key: after[key] for key in kept} == kept
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["attempts"].max() <= 2
    assert not list(Path(f"{store}.checkpoints").glob("*.pt"))


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(reference: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    proc = cli("run", *GRID_ARGS, "--store", store)
    wait_for(store, proc, "SELECT count(*) FROM epoch", 2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Resume with the same command" in err and "--store" in err
    with Store(store, readonly=True) as s:
        statuses = set(s.runs_frame()["status"])
    assert "running" not in statuses and "pending" in statuses
    kept = {**stored_wall_times(store), **checkpointed_wall_times(Path(f"{store}.checkpoints"))}
    assert kept
    resume_here(store)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))
    after = stored_wall_times(store)  # the run in flight continued from its checkpoint
    assert {key: after[key] for key in kept} == kept


def test_sigterm_stops_cleanly_like_ctrl_c(tmp_path: Path) -> None:
    """A scheduler's SIGTERM (a preempted job, ``kill``): the run in flight goes back to
    pending with its checkpoint kept, exit status 130, and the command says how to resume."""
    store = tmp_path / "results.sqlite"
    proc = cli("run", *GRID_ARGS, "--store", store)
    assert wait_for(store, proc, "SELECT count(*) FROM epoch", 1), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "1 run(s) in flight put back to pending" in err, err
    assert "Resume with the same command" in err and "--store" in err
    assert "Traceback" not in err
    with Store(store, readonly=True) as s:
        runs = s.runs_frame()
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert (
            s._conn.execute("SELECT count(*) FROM run WHERE claim IS NOT NULL").fetchone()[0] == 0
        )
    assert "running" not in set(runs["status"]) and "pending" in set(runs["status"])
    released = runs[(runs["status"] == "pending") & (runs["attempts"] == 1)]
    assert len(released) == 1, runs[["run_id", "status", "attempts"]]
    assert run_checkpoints(Path(f"{store}.checkpoints"), released["run_id"].iloc[0])


#: Python run before a runner's command: its runs' environments say ``"runner": RUNNER``, it
#: prints ``trained RUN_ID EPOCH`` for every epoch its driver stores, and it takes 0.1 s more
#: per epoch (so a second runner started meanwhile surely finds runs left to train).
TAG_THE_RUNNER = """
import time
from annealbench import executors, study
environment, epoch = executors.environment, study._Driver.epoch
executors.environment = lambda device: {**environment(device), "runner": RUNNER}
def logged(self, claim, record):
    print("trained", claim.run_id, record["epoch"], flush=True)
    epoch(self, claim, record)
    time.sleep(0.1)
study._Driver.epoch = logged
"""


def test_two_concurrent_runners_train_each_run_once(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annealbench import executors
    from annealbench import study as study_module

    store = tmp_path / "results.sqlite"
    other = cli("run", *GRID_ARGS, "--store", store,
                prelude=f"RUNNER = 'other'\n{TAG_THE_RUNNER}")  # fmt: skip
    wait_for(store, other, "SELECT count(*) FROM run WHERE status = 'running'", 1)
    # A second runner on the same store, in this process, while the first one trains.
    here: list[tuple[int, int]] = []
    environment, epoch = executors.environment, study_module._Driver.epoch
    monkeypatch.setattr(executors, "environment", lambda d: {**environment(d), "runner": "here"})

    def logged(driver: object, claim: Any, record: dict[str, Any]) -> None:
        here.append((claim.run_id, record["epoch"]))
        epoch(driver, claim, record)

    monkeypatch.setattr(study_module._Driver, "epoch", logged)
    resume_here(store)
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, out + err
    logged_there = [line.split() for line in out.splitlines() if line.startswith("trained ")]
    there = [(int(run_id), int(number)) for _, run_id, number in logged_there]
    with Store(store, readonly=True) as s:
        runs = s.runs_frame()
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert runs["attempts"].tolist() == [1] * 4 and set(runs["status"]) == {"done"}
    # Both runners trained, and together they trained every epoch of every run exactly once.
    assert here and there, (here, there)
    assert sorted(here + there) == [(r, e) for r in runs["run_id"] for e in range(1, EPOCHS + 1)]
    by = {"here": {r for r, _ in here}, "other": {r for r, _ in there}}
    assert not by["here"] & by["other"]
    # Each run's environment names the runner that trained it.
    for run_id, env in zip(runs["run_id"], runs["environment"], strict=True):
        env = json.loads(env)
        assert env["host"] and run_id in by[env["runner"]], (run_id, env)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))


def test_local_workers_survive_a_dead_worker_and_store_the_same_numbers(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes; one is SIGKILLed mid-run, its run is retried from its checkpoint:
    the driver receives each of its epochs once, the retry starting past the ones it had."""
    import multiprocessing

    from annealbench import study as study_module

    store = tmp_path / "results.sqlite"
    received: list[tuple[int, int]] = []  # (run id, epoch), as the driver got them
    lost: list[tuple[int, int]] = []  # (run id, len(received) when its worker was found dead)
    killed: list[int] = []
    epoch, lose = study_module._Driver.epoch, study_module._Driver.lost

    def epoch_then_kill(driver: Any, claim: Any, record: dict[str, Any]) -> None:
        received.append((claim.run_id, int(record["epoch"])))
        epoch(driver, claim, record)
        # Once every run in flight has checkpointed an epoch (the driver hears of an epoch
        # after its checkpoint is on disk) and has one still to go, kill a worker that
        # trains one: either of two busy workers, or both when one is idle (that one's
        # death loses nothing).
        seen = [driver.epochs_seen.get(run_id, 0) for run_id in driver.in_flight]
        if not killed and seen and all(1 <= n < EPOCHS for n in seen):
            workers = [p for p in multiprocessing.active_children()
                       if p.name.startswith("annealbench-worker")]  # fmt: skip
            for worker in workers[:1] if len(seen) == len(workers) else workers:
                os.kill(worker.pid, signal.SIGKILL)
                killed.append(worker.pid)

    def noted_lost(driver: Any, claim: Any, reason: str) -> None:
        lost.append((claim.run_id, len(received)))
        lose(driver, claim, reason)

    monkeypatch.setattr(study_module._Driver, "epoch", epoch_then_kill)
    monkeypatch.setattr(study_module._Driver, "lost", noted_lost)
    outcome = run_study(TINY, store, workers=2, threads=1, progress=False, batched="off")
    assert killed and outcome.counts == {"done": 4}
    ((run_id, at),) = lost  # the killed worker's run, and no other, went back to the driver
    with Store(store, readonly=True) as s:
        attempts = s.runs_frame().set_index("run_id")["attempts"]
    assert attempts[run_id] == 2 and sorted(attempts) == [1, 1, 1, 2]
    # The retry continued from the checkpoint: no epoch of the run came twice, and the first
    # one after the retry follows those received before it (a restart would send epoch 1).
    before = [n for r, n in received[:at] if r == run_id]
    after = [n for r, n in received[at:] if r == run_id]
    assert before and after and 1 <= before[-1] < after[0] and after[-1] == EPOCHS, received
    for each in attempts.index:
        epochs = [n for r, n in received if r == each]
        assert epochs == sorted(set(epochs)), (each, received)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))


def _ray_trainers(since: float) -> set[int]:
    """The processes running a Ray task of a run now (Ray titles them after the task), of
    the Ray instance started at ``since`` (not another test's, lingering or in parallel)."""
    import psutil

    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, psutil.Error):
            if cmdline.read_bytes().startswith(b"ray::_ray_train"):
                pid = int(cmdline.parent.name)
                if psutil.Process(pid).create_time() >= since:
                    pids.add(pid)
    return pids


def _mid_run(checkpoints: Path) -> dict[int, dict[str, Any]]:
    """By run id, the checkpoint of each run that holds some but not all of its epochs: a run
    whose task is still training it."""
    import torch

    states = {}
    for path in checkpoints.glob("run*.pt"):
        with contextlib.suppress(OSError, RuntimeError, EOFError):  # just finished: gone
            state = torch.load(path, weights_only=True)
            if 1 <= state["epoch"] < EPOCHS:
                states[int(path.name[3:9])] = state
    return states


def _kill_a_ray_task(
    checkpoints: Path, first_epochs: dict[int, dict], killed: list[int], since: float
) -> None:
    """Once every Ray task that trains a run trains one that has checkpointed an epoch and has
    one still to go, note those runs' epoch-1 records as their checkpoints hold them and
    SIGKILL one of the tasks' processes. The tasks are frozen (SIGSTOP) while this is checked,
    so the killed one cannot finish its run in the meantime."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not killed:
        pids = _ray_trainers(since)
        if pids and len(_mid_run(checkpoints)) == len(pids):
            for pid in pids:
                with contextlib.suppress(OSError):  # gone: the check below sees it
                    os.kill(pid, signal.SIGSTOP)
            try:
                states = _mid_run(checkpoints)
                if _ray_trainers(since) == pids and len(states) == len(pids):
                    first_epochs.update({r: state["records"][0] for r, state in states.items()})
                    victim = min(pids)
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)
            finally:
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)


def test_ray_executor_retries_a_dead_worker_and_stores_the_same_numbers(
    reference: Path, tmp_path: Path
) -> None:
    import ray

    store = tmp_path / "results.sqlite"
    two_runs = dataclasses.replace(TINY, trials=1)
    killed: list[int] = []
    first_epochs: dict[int, dict] = {}
    since = time.time() - 1.0  # process start times are rounded to clock ticks
    watcher = threading.Thread(
        target=_kill_a_ray_task, args=(Path(f"{store}.checkpoints"), first_epochs, killed, since)
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        watcher.start()
        outcome = run_study(two_runs, store, executor="ray", cpus_per_run=1, progress=False)
    finally:
        watcher.join()
        ray.shutdown()
    assert killed, "no Ray worker was seen training"
    assert outcome.counts == {"done": 2}  # Ray retried the killed task
    expected = metrics(reference)
    expected = expected[expected["method"].isin(["sig+", "adam"]) & (expected["seed"] == 0)]
    pd.testing.assert_frame_equal(metrics(store), expected.reset_index(drop=True))
    with Store(store, readonly=True) as s:
        assert '"threads": 1' in s.runs_frame()["environment"].iloc[0]
        epochs = s.epochs_frame()
    # From its checkpoint: every run mid-way at the kill (the killed one among them) stored
    # the epoch 1 its checkpoint held then, wall time included; a restart would time it anew.
    assert first_epochs
    stored = epochs[epochs["epoch"] == 1].set_index("run_id")["wall_time"]
    assert {r: record["wall_time"] for r, record in first_epochs.items()} == {
        r: stored[r] for r in first_epochs
    }


# -- the other commands ------------------------------------------------------------------


def test_status_counts_runs_per_dataset_and_model(reference: Path) -> None:
    result = runner.invoke(app, ["status", "--store", str(reference)])
    assert result.exit_code == 0, result.output
    header, row, total = result.output.splitlines()
    assert header.split() == ["study", "dataset", "model", "total", "done", "running",
                              "diverged", "failed", "remaining"]  # fmt: skip
    assert row.split() == ["default", "fashion-mnist", "nn2", "4", "4", "0", "0", "0", "0"]
    assert total.split() == ["all", "4", "4", "0", "0", "0", "0"]


def test_presets_command_lists_every_preset_with_its_size() -> None:
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:3] for line in result.output.splitlines()[1:-1]
            if line.strip() and not line.startswith(" ")}  # fmt: skip
    assert rows == {"quick": ["48", "6"], "modern-quick": ["108", "8"],
                    "modern-fashion-mnist": ["1260", "100"],
                    "paper-mnist": ["480", "100"],
                    "paper-fashion-mnist": ["480", "100"], "paper-svhn": ["600", "100"],
                    "paper-cifar10": ["600", "100"], "paper-cifar100": ["600", "100"]}  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_runs_and_epochs(reference: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "--store", str(reference), "--format", fmt,
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    runs, epochs = read(out / f"runs.{fmt}"), read(out / f"epochs.{fmt}")
    assert len(runs) == 4 and len(epochs) == 12
    with Store(reference, readonly=True) as s:
        assert epochs["test_acc"].tolist() == s.epochs_frame()["test_acc"].tolist()


# -- bad input ---------------------------------------------------------------------------


def invoke_fails(*args: str | Path, match: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    output = " ".join(result.output.split())
    assert match in output, output
    return output


def test_unknown_preset_lists_the_valid_ones(tmp_path: Path) -> None:
    out = invoke_fails("run", "--preset", "paper-imagenet", "--store", tmp_path / "s.sqlite",
                       match="unknown preset 'paper-imagenet'")  # fmt: skip
    assert all(name in out for name in preset_names())
    assert not (tmp_path / "s.sqlite").exists()


def test_zero_run_grid_is_refused(tmp_path: Path) -> None:
    invoke_fails("run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", ",",
                 "--store", tmp_path / "s.sqlite", match="zero runs")  # fmt: skip
    invoke_fails("run", "--datasets", "fashion-mnist", "--store", tmp_path / "s.sqlite",
                 match="give --datasets and --models")  # fmt: skip


def _digest(path: Path) -> tuple[bytes, float]:
    return path.read_bytes(), path.stat().st_mtime


def test_a_file_that_is_not_a_store_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("not a database\n" * 20)
    before = _digest(path)
    for command in (["run", *GRID_ARGS], ["status"], ["export", "--out", str(tmp_path / "x")]):
        invoke_fails(*command, "--store", path, match="not an annealbench results store")
    assert _digest(path) == before


def test_a_newer_schema_is_refused_and_untouched(reference: Path, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(reference.read_bytes())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _digest(path)
    invoke_fails("run", *GRID_ARGS, "--store", path, match="newer than this annealbench")
    invoke_fails("status", "--store", path, match="upgrade annealbench")
    assert _digest(path) == before


def test_a_conflicting_rerun_says_what_differs(reference: Path, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(reference.read_bytes())
    args = [a if a != "3" else "5" for a in GRID_ARGS]  # --epochs 5
    out = invoke_fails("run", *args, "--store", path, match="run.epochs: stored 3, given 5")
    assert "new --study name" in out
    pd.testing.assert_frame_equal(metrics(path), metrics(reference))


def test_a_read_only_store_is_refused_and_kept(reference: Path, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(reference.read_bytes())
    path.chmod(stat.S_IRUSR)
    before = _digest(path)
    invoke_fails("run", *GRID_ARGS, "--store", path, match="read-only")
    assert _digest(path) == before
    result = runner.invoke(app, ["status", "--store", str(path)])  # reading still works
    assert result.exit_code == 0, result.output


def test_ray_options_need_the_ray_executor(tmp_path: Path) -> None:
    invoke_fails("run", *GRID_ARGS, "--gpu-fraction", "0.5", "--store", tmp_path / "s.sqlite",
                 match="--gpu-fraction apply to --executor ray only")  # fmt: skip
    invoke_fails("run", *GRID_ARGS, "--executor", "slurm", "--store", tmp_path / "s.sqlite",
                 match="unknown executor 'slurm'")  # fmt: skip


def test_ray_executor_without_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    invoke_fails("run", *GRID_ARGS, "--executor", "ray", "--store", tmp_path / "s.sqlite",
                 match="pip install 'annealbench[ray]'")  # fmt: skip


def test_missing_data_stops_the_study_with_the_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annealbench import data

    def missing(*args: object, **kwargs: object) -> None:
        raise data.DataError("no Fashion-MNIST in /nowhere; apt install dataset-fashion-mnist")

    monkeypatch.setattr(data, "load", missing)
    store = tmp_path / "s.sqlite"
    out = invoke_fails("run", *GRID_ARGS, "--store", store, match="apt install dataset-fashion")
    assert "rerun the same command" in out
    with Store(store, readonly=True) as s:  # one run tried, the others left for the rerun
        assert sorted(s.runs_frame()["status"]) == ["failed", "pending", "pending", "pending"]


def test_a_full_disk_mid_study_is_a_clear_error_and_keeps_the_store(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.sqlite"
    path.write_bytes(reference.read_bytes())
    with Store(path) as s:  # forget one finished run, so the rerun has something to train
        s._conn.execute("UPDATE run SET status = 'pending' WHERE run_id = 4")
    before = metrics(path)

    def full(self: Store, claim: object, record: object) -> None:
        raise self._translate(sqlite3.OperationalError("database or disk is full"), "write to")

    monkeypatch.setattr(Store, "record_epoch", full)
    invoke_fails("run", *GRID_ARGS, "--store", path, match="the disk is full")
    with Store(path, readonly=True) as s:
        assert sorted(s.runs_frame()["status"]) == ["done", "done", "done", "pending"]
    pd.testing.assert_frame_equal(metrics(path), before)


def test_bad_run_options_are_refused_before_anything_is_stored(tmp_path: Path) -> None:
    invoke_fails("run", *GRID_ARGS, "--step-per", "batch", "--store", tmp_path / "s.sqlite",
                 match="step_per must be 'iteration' or 'epoch'")  # fmt: skip
    assert not (tmp_path / "s.sqlite").exists()


def test_unknown_study_and_missing_store_in_status(reference: Path, tmp_path: Path) -> None:
    invoke_fails("status", "--store", tmp_path / "none.sqlite", match="no results store")
    invoke_fails("status", "--store", reference, "--study", "nope", match="no study 'nope'")
    invoke_fails("export", "--store", reference, "--format", "xlsx", match="unknown --format")
