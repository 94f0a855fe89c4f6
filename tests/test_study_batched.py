"""The study with batched groups (``annealbench run --batched auto|on|off``): what auto picks,
that a group stores the same numbers as runs trained one at a time, that it claims, records,
finishes and releases each of its runs like a single run, and resumes after SIGKILL.

Real Fashion-MNIST on 512 images, nn2, 3 epochs, 4 runs (2 methods x 2 seeds): enough runs
that auto groups them on the CPU.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from annealbench import executors
from annealbench.cli import app
from annealbench.store import Store
from annealbench.study import MAX_GROUP, group_size
from annealbench.training import RunConfig
from test_study import (
    METRICS,
    checkpointed_wall_times,
    cli,
    invoke_fails,
    metrics,
    runner,
    stored_wall_times,
    wait_for,
)

GRID = ["--workers", "1", "--datasets", "fashion-mnist", "--models", "nn2",
        "--methods", "sig+,adam", "--trials", "2", "--epochs", "3", "--subset", "512",
        "--threads", "1",
        "--no-progress"]  # fmt: skip
#: A group's matmuls round differently from one run's (tests/test_batched.py).
RTOL = 1e-4


def run_here(store: Path, *args: str) -> None:
    result = runner.invoke(app, ["run", *GRID, "--store", str(store), *args])
    assert result.exit_code == 0, result.output


def study(store: Path, batched: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run the grid in this process; returns the size of every group trained."""
    groups: list[int] = []
    group = executors.execute_group

    def counted(configs: list, *args: object, **kwargs: object) -> list:
        groups.append(len(configs))
        return group(configs, *args, **kwargs)

    monkeypatch.setattr(executors, "execute_group", counted)
    run_here(store, "--batched", batched)
    return groups


@pytest.fixture(scope="module")
def batched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid with the default ``--batched auto``, uninterrupted."""
    store = tmp_path_factory.mktemp("batched") / "results.sqlite"
    with pytest.MonkeyPatch.context() as patch:
        assert study(store, "auto", patch) == [4]  # the 4 nn2 runs as one group
    return store


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid one run at a time (``--batched off``)."""
    store = tmp_path_factory.mktemp("alone") / "results.sqlite"
    with pytest.MonkeyPatch.context() as patch:
        assert study(store, "off", patch) == []
    return store


def wall_times_per_epoch(store: Path) -> pd.Series:
    """How many distinct wall times the runs have at each epoch: a group gives every run the
    same share of its epoch; runs trained alone are timed separately."""
    with Store(store, readonly=True) as s:
        return s.epochs_frame().groupby("epoch")["wall_time"].nunique()


def assert_close(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same runs, epochs and statuses; lr exact; metrics within float rounding."""
    keys = ["dataset", "model", "method", "seed", "epoch", "status"]
    pd.testing.assert_frame_equal(got[keys], expected[keys])
    assert got["lr"].tolist() == expected["lr"].tolist()
    for name in set(METRICS) - {"lr"}:
        assert got[name].tolist() == pytest.approx(expected[name].tolist(), rel=RTOL), name


# -- what auto decides ---------------------------------------------------------------------


def row(model: str, runs: int, dataset: str = "fashion-mnist") -> list[RunConfig]:
    methods = ("sig+", "str+", "adam", "rms", "0.1", "exp")
    return [
        RunConfig(dataset, model, methods[i % len(methods)], seed=i // len(methods))
        for i in range(runs)
    ]


def test_auto_groups_nn2_on_the_cpu_and_trains_other_models_alone() -> None:
    assert group_size(row("nn2", 6), "auto", "cpu") == 6
    assert group_size(row("nn2", 30), "auto", "cpu") == MAX_GROUP["cpu"] == 12
    assert group_size(row("nn2", 3), "auto", "cpu") == 1  # too few to win on the CPU
    for model in ("nn3", "lenet4", "vgg9"):  # measured slower or within noise as a group
        assert group_size(row(model, 12), "auto", "cpu") == 1, model
    assert group_size(row("resnet18", 12, "cifar10"), "auto", "cpu") == 1  # BatchNorm
    assert group_size(row("nn2", 12), "off", "cpu") == 1
    assert group_size(row("lenet4", 12), "on", "cpu") == 12  # on: wherever it is possible
    assert group_size(row("lenet4", 3), "on", "cpu") == 3
    assert group_size(row("resnet18", 12, "cifar10"), "on", "cpu") == 1


# -- a study with groups -------------------------------------------------------------------


def test_auto_trains_the_grid_as_one_group_and_finishes_each_run(batched: Path) -> None:
    frame = metrics(batched)
    assert len(frame) == 12 and set(frame["status"]) == {"done"}
    assert wall_times_per_epoch(batched).tolist() == [1, 1, 1]  # one group's shared epochs
    with Store(batched, readonly=True) as s:
        runs = s.runs_frame()
    assert runs["attempts"].tolist() == [1] * 4 and runs["environment"].notna().all()
    assert not list(Path(f"{batched}.checkpoints").glob("*.pt"))


def test_batched_studies_store_the_numbers_of_one_at_a_time(
    batched: Path, alone: Path, tmp_path: Path
) -> None:
    """``on`` in two worker processes: the group is one unit of work in one worker, and
    stores what the in-process group stored, bit for bit, and what runs trained alone
    stored, within float rounding."""
    assert wall_times_per_epoch(alone).tolist() == [4, 4, 4]  # timed one run at a time
    store = tmp_path / "results.sqlite"
    run_here(store, "--batched", "on", "--workers", "2")
    assert wall_times_per_epoch(store).tolist() == [1, 1, 1]
    pd.testing.assert_frame_equal(metrics(store), metrics(batched))
    assert_close(metrics(store), metrics(alone))


def test_sigkill_mid_group_then_resume_equals_the_uninterrupted_group(
    batched: Path, tmp_path: Path
) -> None:
    store = tmp_path / "results.sqlite"
    proc = cli("run", *GRID, "--store", store)
    wait_for(store, proc, "SELECT count(*) FROM epoch", 5)  # into the group's second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["status"].tolist() == ["running"] * 4  # all in the killed group
    assert len(list(Path(f"{store}.checkpoints").glob("*.pt"))) == 4
    saved = checkpointed_wall_times(Path(f"{store}.checkpoints"))
    assert {epoch for _, epoch in saved} <= {1, 2}  # killed before the group's last epoch
    run_here(store)  # the same command: the group is claimed again and resumed batched
    pd.testing.assert_frame_equal(metrics(store), metrics(batched))
    # From the checkpoints: the epochs they held are stored as they were, not trained again.
    stored = stored_wall_times(store)
    assert {key: stored[key] for key in saved} == saved
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["attempts"].tolist() == [2] * 4
    assert not list(Path(f"{store}.checkpoints").glob("*.pt"))


def test_ctrl_c_releases_every_run_of_the_group_and_it_resumes_one_at_a_time(
    batched: Path, tmp_path: Path
) -> None:
    store = tmp_path / "results.sqlite"
    proc = cli("run", *GRID, "--store", store)
    wait_for(store, proc, "SELECT count(*) FROM epoch", 4)  # the group's first epoch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "4 run(s) in flight put back to pending" in err
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["status"].tolist() == ["pending"] * 4
    # The group's per-run checkpoints are the engine's: each run continues alone from its own.
    saved = checkpointed_wall_times(Path(f"{store}.checkpoints"))
    assert len({run_id for run_id, _ in saved}) == 4
    run_here(store, "--batched", "off")
    assert_close(metrics(store), metrics(batched))
    stored = stored_wall_times(store)
    assert {key: stored[key] for key in saved} == saved
    with Store(store, readonly=True) as s:
        assert s.runs_frame()["attempts"].tolist() == [2] * 4


# -- what cannot be batched ----------------------------------------------------------------


def test_forced_on_refuses_what_cannot_share_a_pass(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    bn = ["run", "--datasets", "cifar10", "--models", "nn2,resnet18", "--methods", "sig+",
          "--trials", "4", "--epochs", "1", "--store", store]  # fmt: skip
    out = invoke_fails(*bn, "--batched", "on", match="--batched on: cifar10/resnet18")
    assert "BatchNorm" in out and "Use --batched auto" in out
    invoke_fails("run", *GRID, "--batched", "on", "--executor", "ray", "--store", store,
                 match="--batched on applies to the local executor")  # fmt: skip
    invoke_fails("run", *GRID, "--batched", "always", "--store", store,
                 match="unknown --batched 'always'; valid: auto, on, off")  # fmt: skip
    assert not store.exists()  # refused before anything is stored
