"""Executors: thread defaults, one run's outcome, and what is (not) a run's own failure."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from annealbench import executors
from annealbench.executors import ExecutorError, default_threads, execute, make
from annealbench.store import StoreError

CONFIG = {"dataset": "fashion-mnist", "model": "nn2", "method": "sig+", "seed": 0,
          "epochs": 2, "subset": 128}  # fmt: skip


def test_default_threads_leave_a_core_free_and_follow_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 2)
    assert default_threads(1) == 1 and default_threads(4) == 1
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 17)
    assert default_threads(1) == 16 and default_threads(4) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert default_threads(2) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "local", "workers": 0}, "--workers must be 'auto' or an integer >= 1"),
        ({"name": "local", "workers": "many"}, "--workers must be 'auto' or an integer >= 1"),
        ({"name": "ray", "gpu_fraction": 1.5}, "--gpu-fraction must be in"),
        ({"name": "local", "address": "auto"}, "apply to --executor ray only"),
        ({"name": "dask"}, "unknown executor 'dask'; valid: local, ray"),
    ],
)
def test_bad_executor_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ExecutorError, match=message):
        make(**kwargs)


def test_execute_trains_and_reports_every_epoch(tmp_path: Path) -> None:
    seen: list[dict] = []
    outcome = execute(CONFIG, tmp_path / "run.pt", on_epoch=seen.append)
    assert outcome.status == "done" and outcome.error is None
    assert [r["epoch"] for r in seen] == [1, 2]
    assert [dataclasses.asdict(r) for r in outcome.epochs] == seen
    assert outcome.environment["device"] == "cpu"
    again = execute(CONFIG, tmp_path / "run.pt")  # from the finished checkpoint: no training
    assert again.epochs == outcome.epochs


def test_a_runs_own_error_is_a_failed_outcome(tmp_path: Path) -> None:
    outcome = execute({**CONFIG, "epochs": 0}, tmp_path / "run.pt")
    assert outcome.status == "failed" and outcome.study_wide  # a ConfigError: all runs share it
    assert "epochs must be an integer >= 1" in outcome.error


def test_an_error_storing_an_epoch_is_not_the_runs_failure(tmp_path: Path) -> None:
    def disk_full(record: dict) -> None:
        raise StoreError("the disk is full")

    with pytest.raises(StoreError, match="disk is full"):
        execute(CONFIG, tmp_path / "run.pt", on_epoch=disk_full)
    assert (tmp_path / "run.pt").exists()  # epoch 1's checkpoint: the rerun continues there


def test_auto_workers_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 2)
    for busy, expected in ((0.1, 2), (0.6, 1), (1.2, 1), (7.0, 1)):
        monkeypatch.setattr(executors, "busy_cores", lambda busy=busy: busy)
        assert executors.auto_workers("cpu") == expected
    monkeypatch.setattr(executors.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(executors, "busy_cores", lambda: 3.4)
    assert executors.auto_workers("cpu") == 13


def test_busy_cores_sees_a_process_spinning_now() -> None:
    import subprocess
    import sys

    idle = executors.busy_cores(0.3)
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = executors.busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 0.01
    assert busy >= 0.7  # one core spinning (a shared machine may add more, never less)
