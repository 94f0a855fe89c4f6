"""``annealbench run --log``: every run mirrored to TensorBoard and MLflow as it trains, and
the mirrors equal to the store after a Ctrl-C and a resume, a re-reported epoch, a fresh
destination; a bad spec refused before anything is stored; a failing logger only warned of.

Real tiny studies (Fashion-MNIST, nn2, 256 images, 2 epochs) in this process; read back
with TensorBoard's event reader and MLflow's client. One MLflow database for the module
(making one costs seconds): each test has its own study, so its own experiment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow  # installed by make install ([tracking]): a missing one fails, never skips
import pandas as pd
import pytest
import tensorboard  # noqa: F401
from typer.testing import CliRunner

from annealbench import study as study_module
from annealbench import tracking
from annealbench.cli import app
from annealbench.store import Store
from annealbench.store.queue import Claim
from annealbench.study import Study, run_study

EPOCHS = 2
CORE = ["lr", "train_loss", "train_acc", "test_loss", "test_acc"]


def tiny(name: str, trials: int = 2) -> Study:
    return Study(name, ("fashion-mnist",), ("nn2",), ("sig+",), trials,
                 {"epochs": EPOCHS, "subset": 256})  # fmt: skip


def train(study: Study, store: Path, log: list[str]) -> study_module.StudyOutcome:
    return run_study(study, store, threads=1, progress=False, batched="off", log=log)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"


@pytest.fixture
def client(mlflow_uri: str) -> Any:
    return mlflow.MlflowClient(mlflow_uri)


def stored(store: Path, study: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(store, readonly=True) as s:
        return s.runs_frame(study, tuning=True), s.epochs_frame(study, tuning=True)


def mlflow_runs(client: Any, study: str) -> dict[str, Any]:
    """The study's MLflow runs by run key."""
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    keys = [r.data.tags["run_key"] for r in runs]
    assert len(keys) == len(set(keys)), keys
    return {r.data.tags["run_key"]: r for r in runs}


def metric_points(client: Any, study: str) -> dict[str, list[tuple[int, float, int]]]:
    """(step, value, timestamp) of every logged test_acc, by run key."""
    return {
        key: [(m.step, m.value, m.timestamp)
              for m in client.get_metric_history(run.info.run_id, "test_acc")]
        for key, run in mlflow_runs(client, study).items()
    }  # fmt: skip


def tb_folder(root: Path, study: str, run: Any) -> Path:
    claim = Claim(0, run.run_key, "", {"dataset": run.dataset, "model": run.model,
                                       "method": run.method, "seed": run.seed}, 1)  # fmt: skip
    return tracking.TensorBoardLogger(str(root), study).folder(claim)


def raw_steps(folder: Path) -> Counter[tuple[str, int]]:
    """(tag, step) of every scalar in a run folder's event files, as written."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    written: Counter[tuple[str, int]] = Counter()
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    written[(value.tag, event.step)] += 1
    return written


def assert_mirrors_equal_store(store: Path, study: str, tb: Path, client: Any) -> None:
    """One TensorBoard and one MLflow run per stored run, each metric at steps 1..epochs
    exactly once with the stored values, and the tags, params and status."""
    runs, epochs = stored(store, study)
    by_key = mlflow_runs(client, study)
    assert sorted(by_key) == sorted(runs["run_key"])
    assert sorted(p.name for p in (tb / study).iterdir()) == sorted(
        tb_folder(tb, study, run).name for run in runs.itertuples()
    )
    for run in runs.itertuples():
        mine = epochs[epochs["run_id"] == run.run_id].set_index("epoch")
        assert list(mine.index) == list(range(1, run.epochs + 1))
        folder = tb_folder(tb, study, run)
        scalars, status = tracking.read_run(folder)
        assert status == run.status
        assert sorted(scalars) == sorted(CORE)  # no validation split: no val_* series
        ml = by_key[run.run_key]
        assert ml.info.status == "FINISHED"
        tags = ml.data.tags
        assert {k: tags[k] for k in ("study", "dataset", "model", "method", "seed", "status")} == {
            "study": study, "dataset": run.dataset, "model": run.model, "method": run.method,
            "seed": str(run.seed), "status": run.status,
        }  # fmt: skip
        assert ml.data.params["epochs"] == str(EPOCHS) and ml.data.params["subset"] == "256"
        assert "device" not in ml.data.params
        for name in CORE:
            want = mine[name].tolist()
            assert list(scalars[name]) == list(mine.index), (name, scalars[name])
            assert list(scalars[name].values()) == pytest.approx(want, rel=1e-6)
            history = client.get_metric_history(ml.info.run_id, name)
            assert sorted(m.step for m in history) == list(mine.index), (name, history)
            assert [m.value for m in sorted(history, key=lambda m: m.step)] == want


# -- bad specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("foo:x", "unknown tracker 'foo'"),
        ("tensorboard:", "names no destination"),
        ("mlflow:", "names no destination"),
        ("nocolon", "give tensorboard:DIR or mlflow:URI"),
        ("mlflow:sqlite://", "in-memory database"),
    ],
)
def test_a_bad_spec_is_one_clear_error_before_anything_is_stored(
    spec: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(app, [
        "run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+",
        "--trials", "1", "--epochs", "1", "--subset", "256", "--workers", "1",
        "--no-progress", "--store", str(store), "--log", "tensorboard:tb", "--log", spec,
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and f"--log {spec}" in errors[0], result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no store, no checkpoints, no tb folder


def test_a_folder_for_mlflow_is_refused_where_mlflow_no_longer_writes_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    from mlflow import environment_variables

    if not hasattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("this MLflow still writes its file store")
    with pytest.raises(ValueError, match="mlflow:sqlite:///mlruns.db"):
        tracking.check(["mlflow:./mlruns"])
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking.check(["mlflow:./mlruns"])


def test_a_missing_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else real(name))  # fmt: skip
    with pytest.raises(ValueError, match=r"MLflow is not installed; pip install 'annealbench\["):
        tracking.check(["mlflow:sqlite:///x.db"])


# -- studies -----------------------------------------------------------------------------


@pytest.fixture
def interrupted(
    tmp_path: Path, mlflow_uri: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path, list[str]]]:
    """A study of two runs stopped by Ctrl-C after three stored epochs (the first run done,
    the second one epoch in), with both mirrors; yields its store, tb folder and specs."""
    store, tb = tmp_path / "results.sqlite", tmp_path / "tb"
    log = [f"tensorboard:{tb}", f"mlflow:{mlflow_uri}"]
    told = study_module._Driver.epoch
    count = [0]

    def epoch_then_ctrl_c(driver: Any, claim: Any, record: Any) -> None:
        told(driver, claim, record)
        count[0] += 1
        if count[0] == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(study_module._Driver, "epoch", epoch_then_ctrl_c)
        outcome = train(tiny("resumed"), store, log)
    assert outcome.interrupted and outcome.counts == {"done": 1, "pending": 1}
    yield store, tb, log


def test_a_study_stopped_and_resumed_is_mirrored_once_per_step(
    interrupted: tuple[Path, Path, list[str]], client: Any
) -> None:
    store, tb, log = interrupted
    runs, _ = stored(store, "resumed")
    pending = runs[runs["status"] == "pending"].iloc[0]
    # The run given back: one epoch in each mirror, said to be pending.
    scalars, status = tracking.read_run(tb_folder(tb, "resumed", pending))
    assert status == "pending" and all(list(s) == [1] for s in scalars.values())
    ml = mlflow_runs(client, "resumed")[pending.run_key]
    assert (ml.info.status, ml.data.tags["status"]) == ("KILLED", "pending")

    assert train(tiny("resumed"), store, log).counts == {"done": 2}
    assert_mirrors_equal_store(store, "resumed", tb, client)
    for run in runs.itertuples():  # nothing written twice, not even where a reader purges
        written = raw_steps(tb_folder(tb, "resumed", run))
        assert set(written.values()) == {1}, written


def test_finished_runs_fill_in_a_fresh_destination(
    interrupted: tuple[Path, Path, list[str]], client: Any, mlflow_uri: str
) -> None:
    """A second process resumes into fresh destinations: the run it trains is complete
    (its first epoch from the store's full list), and the run finished before is filled in
    as the study starts (:func:`tracking.finished_runs`). Replaying into complete mirrors
    writes nothing."""
    store, tb, _ = interrupted
    for run in mlflow_runs(client, "resumed").values():  # MLflow as if never logged to
        client.delete_run(run.info.run_id)
    fresh = store.parent / "fresh-tb"
    log = [f"tensorboard:{fresh}", f"mlflow:{mlflow_uri}"]
    assert train(tiny("resumed"), store, log).counts == {"done": 2}
    # the run trained now, and the one finished before (the driver replays it on start)
    assert len(list((fresh / "resumed").iterdir())) == 2
    assert len(mlflow_runs(client, "resumed")) == 2
    assert_mirrors_equal_store(store, "resumed", fresh, client)
    before = {p: p.stat().st_mtime_ns for p in fresh.rglob("*")}
    histories = metric_points(client, "resumed")
    with Store(store, readonly=True) as s:
        tracking.replay(tracking.open_all(log, "resumed"), s, "resumed")
    assert {p: p.stat().st_mtime_ns for p in fresh.rglob("*")} == before
    assert metric_points(client, "resumed") == histories


def test_a_re_reported_epoch_replaces_the_one_logged(tmp_path: Path, mlflow_uri: str,
                                                     client: Any) -> None:  # fmt: skip
    """A run killed at epoch 3 whose checkpoint held epoch 2 is resumed by a new process and
    reports epoch 3 again: each mirror holds steps 1..4 once, with the new values."""
    config = {"dataset": "fashion-mnist", "model": "nn2", "method": "sig+", "seed": 0,
              "epochs": 4, "device": "cpu", "validation": 0.1}  # fmt: skip
    claim = Claim(1, "0123456789abcdef", "", config, 1)

    def record(epoch: int, again: bool = False) -> dict[str, Any]:
        loss = 1 / epoch + (0.5 if again else 0.0)  # TensorBoard: even a different value
        return {"epoch": epoch, "lr": 0.1, "train_loss": loss, "train_acc": 50.0,
                "test_loss": loss, "test_acc": 50.0, "val_loss": loss,
                "val_acc": math.nan if epoch == 4 else 50.0}  # fmt: skip

    log = [f"tensorboard:{tmp_path}", f"mlflow:{mlflow_uri}"]
    first = tracking.open_all(log, "rereported")
    for epoch in (1, 2, 3):
        for logger in first:
            logger.epoch(claim, record(epoch))
    # killed: no close
    second = tracking.open_all(log, "rereported")
    final = [record(1), record(2), record(3, again=True), record(4, again=True)]
    tb, ml = second
    tb.epoch(claim, final[2])
    ml.epoch(claim, record(3))  # MLflow: the same value (a deterministic resume)
    for logger in second:
        logger.epoch(claim, final[3])
    tb.finished(claim, "done", final)
    ml.finished(claim, "done", [record(1), record(2), record(3), final[3]])
    scalars, status = tracking.read_run(tb.folder(claim))
    assert status == "done" and sorted(scalars) == sorted([*CORE, "val_loss", "val_acc"])
    assert scalars["train_loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1 / 3 + 0.5, 4: 0.75})
    assert list(scalars["val_acc"]) == [1, 2, 3]  # NaN: no validation value that epoch
    (run,) = mlflow_runs(client, "rereported").values()
    assert run.data.tags["status"] == "done" and run.info.status == "FINISHED"
    for name in CORE:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == [1, 2, 3, 4], (name, steps)


def test_a_failing_logger_is_dropped_with_a_warning_and_the_study_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    outcome = train(tiny("failing", trials=1), tmp_path / "results.sqlite",
                    [f"tensorboard:{tmp_path / 'tb'}"])  # fmt: skip
    assert outcome.counts == {"done": 1} and not outcome.failures
    err = capsys.readouterr().err
    assert err.count(f"logging to tensorboard:{tmp_path / 'tb'} stopped: OSError") == 1, err
