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
from pathlib import Path

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
# One worker: these tests watch the study's own process (monkeypatches, kills, counts).
GRID_ARGS = ["--workers", "1", "--datasets", "fashion-mnist", "--models", "nn2",
             "--methods", ",".join(METHODS), "--trials", "2", "--epochs", "3", "--subset", "512",
             "--threads", "1",
             "--no-progress", "--batched", "off"]  # fmt: skip
METRICS = ["lr", "train_loss", "train_acc", "test_loss", "test_acc"]
TINY = Study(
    name="default",
    datasets=("fashion-mnist",),
    models=("nn2",),
    methods=METHODS,
    trials=2,
    options={"epochs": 3, "subset": 512},
)

runner = CliRunner()


def cli(*args: str | Path) -> subprocess.Popen:
    """`annealbench ARGS` as a real process (so it can be killed)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from annealbench.cli import main; main()", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
                                   "paper-cifar10", "paper-cifar100"}  # fmt: skip
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
    assert not any(Path(f"{reference}.checkpoints").iterdir())  # finished runs leave none


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


def wait_for(store: Path, proc: subprocess.Popen, sql: str, at_least: int) -> None:
    """Poll the store until ``sql`` counts ``at_least`` rows (or the process ends)."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
            try:
                if conn.execute(sql).fetchone()[0] >= at_least:
                    return
            finally:
                conn.close()
        time.sleep(0.005)


def resume_here(store: Path) -> None:
    """Rerun the same command (in this process: the same code, without a second torch import)."""
    result = runner.invoke(app, ["run", *GRID_ARGS, "--store", str(store)])
    assert result.exit_code == 0, result.output


def test_sigkill_mid_study_then_resume_equals_uninterrupted(
    reference: Path, tmp_path: Path
) -> None:
    store = tmp_path / "results.sqlite"
    proc = cli("run", *GRID_ARGS, "--store", store)
    wait_for(store, proc, "SELECT count(*) FROM epoch", 5)  # in the second run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    with Store(store, readonly=True) as s:
        runs, epochs = s.runs_frame(), s.epochs_frame()
    assert 0 < (runs["status"] == "done").sum() < 4, runs["status"].tolist()
    # The run in flight has a checkpoint at least as far as the store: nothing stored is lost.
    interrupted = runs[runs["status"] == "running"]
    status = runner.invoke(app, ["status", "--store", str(store)]).output
    assert ("1 of the running runs lost their process" in status) == bool(len(interrupted))
    if len(interrupted):
        import torch

        (checkpoint,) = Path(f"{store}.checkpoints").glob("*.pt")
        saved = torch.load(checkpoint, weights_only=True)["epoch"]
        assert saved >= (epochs["run_id"] == interrupted["run_id"].iloc[0]).sum()
    resume_here(store)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))
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
    resume_here(store)
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))


def test_two_concurrent_runners_train_each_run_once(reference: Path, tmp_path: Path) -> None:
    store = tmp_path / "results.sqlite"
    other = cli("run", *GRID_ARGS, "--store", store)
    wait_for(store, other, "SELECT count(*) FROM run WHERE status = 'running'", 1)
    resume_here(store)  # a second runner on the same store, while the first one trains
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, out + err
    with Store(store, readonly=True) as s:
        runs = s.runs_frame()
        assert s._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert runs["attempts"].tolist() == [1] * 4 and set(runs["status"]) == {"done"}
    assert runs["environment"].str.contains('"host"').all()
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))


def test_local_workers_survive_a_dead_worker_and_store_the_same_numbers(
    reference: Path, tmp_path: Path
) -> None:
    """Two worker processes; one is SIGKILLed mid-run, its run is retried from its checkpoint."""
    import multiprocessing

    store = tmp_path / "results.sqlite"
    killed: list[int] = []

    def kill_a_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
                try:
                    stored = conn.execute("SELECT count(*) FROM epoch").fetchone()[0]
                finally:
                    conn.close()
                workers = [p for p in multiprocessing.active_children()
                           if p.name.startswith("annealbench-worker")]  # fmt: skip
                if stored >= 1 and workers:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    killed.append(workers[0].pid)
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_a_worker)
    watcher.start()
    outcome = run_study(TINY, store, workers=2, threads=1, progress=False, batched="off")
    watcher.join()
    assert killed and outcome.counts == {"done": 4}
    with Store(store, readonly=True) as s:
        attempts = sorted(s.runs_frame()["attempts"])
    assert attempts == [1, 1, 1, 2]  # the killed worker's run, trained again from its checkpoint
    pd.testing.assert_frame_equal(metrics(store), metrics(reference))


def _kill_a_ray_task(checkpoints: Path, killed: list[int]) -> None:
    """Once a run has checkpointed an epoch, SIGKILL a Ray worker process that trains one."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not killed:
        if list(checkpoints.glob("*.pt")):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    if cmdline.read_bytes().startswith(b"ray::_ray_train"):
                        os.kill(int(cmdline.parent.name), signal.SIGKILL)
                        killed.append(int(cmdline.parent.name))
                        return
        time.sleep(0.01)


def test_ray_executor_retries_a_dead_worker_and_stores_the_same_numbers(
    reference: Path, tmp_path: Path
) -> None:
    import ray

    store = tmp_path / "results.sqlite"
    two_runs = dataclasses.replace(TINY, trials=1)
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_a_ray_task, args=(Path(f"{store}.checkpoints"), killed))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        watcher.start()
        outcome = run_study(two_runs, store, executor="ray", cpus_per_run=1, progress=False)
    finally:
        watcher.join()
        ray.shutdown()
    assert killed, "no Ray worker was seen training"
    assert outcome.counts == {"done": 2}  # Ray retried the killed task from its checkpoint
    expected = metrics(reference)
    expected = expected[expected["method"].isin(["sig+", "adam"]) & (expected["seed"] == 0)]
    pd.testing.assert_frame_equal(metrics(store), expected.reset_index(drop=True))
    with Store(store, readonly=True) as s:
        assert '"threads": 1' in s.runs_frame()["environment"].iloc[0]


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
    assert rows == {"quick": ["48", "6"], "paper-mnist": ["480", "100"],
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
