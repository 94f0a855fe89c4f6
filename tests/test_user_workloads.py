"""A study of the user's own model and data, end to end (issue 12's "done when").

A user folder holds ``mynets.py`` (``def build(input_shape, num_classes)``) and ``data.npz``
(a real tabular dataset, scikit-learn's breast cancer). The study runs from the command
line with a validation split, on local worker processes and on a local Ray instance with
equal numbers; it is described by a study file too, resumes bit for bit after an
interruption, refuses data changed under it, and runs from Python.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from annealbench import api, data, methods, models
from annealbench.errors import StudyError
from annealbench.store import Store, StoreError
from annealbench.training import RunConfig, train, train_group

MYNETS = """import torch


def build(input_shape, num_classes):
    features = 1
    for size in input_shape:
        features *= size
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(features, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, num_classes),
    )
"""
METRICS = ["lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
CLI = Path(sys.executable).with_name("annealbench")


def write_data(path: Path, seed: int = 0) -> Path:
    """Breast cancer (569 x 30 features, 2 classes), split 75/25 stratified."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    parts = train_test_split(x.astype(np.float32), y, test_size=0.25, random_state=seed, stratify=y)
    x_train, x_test, y_train, y_test = parts
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture()
def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "mynets.py").write_text(MYNETS)
    write_data(folder / "data.npz")
    return folder


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script, run from the user's folder as a user would."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": ""}
    return subprocess.run(
        [str(CLI), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


def cli_here(
    folder: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> subprocess.CompletedProcess[str]:
    """The command in this process (no interpreter start), from ``folder``, as ``cli``."""
    from typer.testing import CliRunner

    from annealbench.cli import app

    monkeypatch.chdir(folder)
    result = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def numbers(store: Path) -> pd.DataFrame:
    with Store(store, readonly=True) as s:
        epochs = s.epochs_frame()
    keys = ["method", "seed", "epoch"]
    return epochs[keys + METRICS].sort_values(keys).reset_index(drop=True)


GRID = ["--datasets", "./data.npz", "--models", "mynets:build", "--methods", "sig+,cosine,adam",
        "--trials", "2", "--epochs", "3", "--validation", "0.1"]  # fmt: skip


def test_a_user_study_runs_from_the_command_line_and_on_ray_with_equal_numbers(
    user_folder: Path,
) -> None:
    local = cli(user_folder, "run", *GRID, "--store", "s.sqlite", "--workers", "2",
                "--batched", "off", "--no-progress")  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert "6 done" in local.stdout
    on_ray = cli(user_folder, "run", *GRID, "--store", "ray.sqlite", "--executor", "ray",
                 "--no-progress")  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    ours, theirs = numbers(user_folder / "s.sqlite"), numbers(user_folder / "ray.sqlite")
    assert len(ours) == 18 and ours["val_acc"].notna().all()
    pd.testing.assert_frame_equal(ours, theirs)
    with Store(user_folder / "s.sqlite", readonly=True) as s:
        runs = s.runs_frame()
        settings = s.study_settings("default")
    assert set(runs["dataset"]) == {str(user_folder / "data.npz")}
    assert set(runs["model"]) == {"mynets:build"}
    facts = settings["data"][str(user_folder / "data.npz")]
    assert facts["input_shape"] == [30] and facts["num_classes"] == 2
    assert settings["run"]["validation"] == 0.1

    report = cli(user_folder, "report", "--store", "s.sqlite", "--out", "report")
    assert report.returncode == 0, report.stderr
    tables = (user_folder / "report" / "tables.md").read_text()
    assert "validation protocol" in tables.lower()
    assert "val ave" in tables and "test ave" in tables
    assert "mynets:build" in tables


def test_a_study_file_runs_resumes_and_is_kept_with_the_study(
    user_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_file = user_folder / "study.toml"
    study_file.write_text(
        'name = "mine"\n'
        'datasets = ["data.npz"]\n'
        'models = ["mynets:build"]\n'
        "trials = 1\n\n"
        "[run]\nepochs = 2\nvalidation = 40\n\n"
        '[methods."sig+"]\n\n'
        "[methods.my-linear]  # defined here\n"
        'optimizer = "sgd"\nschedule = "linear"\nschedule_settings = { lr_up = 0.05 }\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "file.sqlite"
    run = ("run", str(study_file), "--store", str(store), "--no-progress", "--workers", "1")
    first = cli_here(elsewhere, monkeypatch, *run)
    assert first.returncode == 0, first.stderr
    assert "2 done" in first.stdout
    again = cli_here(elsewhere, monkeypatch, *run)
    assert again.returncode == 0 and "2 done" in again.stdout
    with Store(store, readonly=True) as s:
        settings = s.study_settings("mine")
        runs = s.runs_frame("mine")
    assert settings["source"]["text"] == study_file.read_text()
    assert settings["custom_methods"]["my-linear"]["schedule"] == "linear"
    assert list(runs["attempts"]) == [1, 1]  # the rerun trained nothing
    report = cli_here(elsewhere, monkeypatch, "report", "--store", str(store), "--out",
                      str(tmp_path / "r"))  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "[methods.my-linear]" in (tmp_path / "r" / "tables.md").read_text()


@pytest.mark.parametrize(
    "text,message",
    [
        ("datasets = [", "is not valid TOML"),
        ('models = ["nn2"]\n', "has no datasets"),
        ('datasets = ["x.npz"]\nmodels = ["nn2"]\nepochs = 3\n', r"unknown keys \['epochs'\]"),
        ('datasets = ["fashion-mnist"]\nmodels = ["nn2"]\n[methods."sig+"]\nlr = 1\n',
         "'sig\\+' is built in"),
        ('datasets = ["fashion-mnist"]\nmodels = ["nn2"]\n[methods.bad]\noptimizer = "lion"\n',
         "unknown optimizer 'lion'"),
    ],
)  # fmt: skip
def test_a_bad_study_file_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text)
    result = cli_here(
        tmp_path, monkeypatch, "run", str(path), "--store", str(tmp_path / "s.sqlite")
    )
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr or "study" in result.stderr
    assert message.replace("\\", "") in result.stderr.replace("\\", "") or pytest.fail(
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s.sqlite").exists()


def test_data_changed_under_a_study_is_refused_and_the_store_kept(
    user_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*GRID[:4], "--methods", "sig+", "--trials", "1", "--epochs", "1",
            "--store", "s.sqlite", "--no-progress", "--workers", "1"]  # fmt: skip
    assert cli_here(user_folder, monkeypatch, "run", *args).returncode == 0
    before = (user_folder / "s.sqlite").read_bytes()
    write_data(user_folder / "data.npz", seed=1)  # another split: other arrays
    result = cli_here(user_folder, monkeypatch, "run", *args)
    assert result.returncode == 2
    assert "fingerprint" in result.stderr and "data.npz" in result.stderr
    assert (user_folder / "s.sqlite").read_bytes() == before


# -- in this process: resume, batching, the Python API ----------------------------------------


@pytest.fixture()
def on_path(user_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(user_folder))
    yield user_folder
    sys.modules.pop("mynets", None)


class Stop(Exception):
    pass


def interrupted_then_resumed(configs: list[RunConfig], folder: Path, stop_after: int) -> list:
    """Train, raise after ``stop_after`` epochs of the first run, then resume to the end."""
    paths = [folder / f"run{i}.pt" for i in range(len(configs))]

    def stop(index: int, record) -> None:
        if index == 0 and record.epoch == stop_after:
            raise Stop

    with pytest.raises(Stop):
        train_group(configs, checkpoint_paths=paths, on_epoch=stop)
    return train_group(configs, checkpoint_paths=paths)


def test_kill_and_resume_is_bit_identical_for_a_user_workload(on_path: Path) -> None:
    npz = str(on_path / "data.npz")
    configs = [
        RunConfig(
            npz,
            "mynets:build",
            method,
            seed=seed,
            epochs=4,
            batch_size=64,
            validation=0.1,
            device="cpu",
        )  # fmt: skip
        for method in ("sig+", "adam")
        for seed in (0, 1)
    ]
    assert models.batch_problem("mynets:build", (30,), 2) is None  # it qualifies: batched
    straight = train_group(configs)
    resumed = interrupted_then_resumed(configs, on_path, stop_after=2)
    for a, b in zip(straight, resumed, strict=True):
        assert [dataclasses.replace(r, wall_time=0) for r in a.epochs] == [
            dataclasses.replace(r, wall_time=0) for r in b.epochs
        ]
        assert all(r.val_acc is not None and math.isfinite(r.val_loss) for r in a.epochs)
    alone = train(configs[0])  # one at a time: the same run, the same split
    assert alone.epochs[-1].val_acc == pytest.approx(straight[0].epochs[-1].val_acc, abs=1.0)


def test_a_model_with_batchnorm_trains_alone_and_the_log_says_why(
    on_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (on_path / "bnnets.py").write_text(
        "import torch\n\n\ndef build(input_shape, num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 16),\n"
        "        torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, num_classes))\n"
    )
    study = api.study("bn", datasets=[str(on_path / "data.npz")], models=["bnnets:build"],
                      methods=["sig+", "adam", "cosine", "exp"], trials=1, epochs=1)  # fmt: skip
    outcome = api.run(study, tmp_path / "bn.sqlite", progress=False, batched="auto")
    assert outcome.counts == {"done": 4}
    assert "bnnets:build trains one run at a time" in capsys.readouterr().err
    sys.modules.pop("bnnets", None)


def build(input_shape, num_classes):  # an importable factory: stored as its import path
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), num_classes)
    )


def test_the_python_api_runs_arrays_and_factories_and_returns_frames(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order]
    arrays = (x[:130], y[:130], x[130:], y[130:])
    os.environ.setdefault("ANNEALBENCH_DATA", str(tmp_path / "data"))
    mine = api.Method("my-cosine", "sgd", "cosine", schedule_settings={"lr_up": 0.05})
    study = api.study("wine", datasets={"wine": arrays}, models={"linear": build},
                      methods=["sig+", mine], trials=2, epochs=2, validation=20)  # fmt: skip
    assert study.models == (f"{__name__}:build",)
    store = tmp_path / "api.sqlite"
    outcome = api.run(study, store, progress=False)
    assert outcome.counts == {"done": 4}
    again = api.run(study, store, progress=False)  # resumes: nothing left to train
    assert again.counts == {"done": 4}
    res = api.results(store)
    assert len(res.runs) == 4 and res.epochs["val_acc"].notna().all()
    assert sorted(res.summary["method"]) == ["my-cosine", "sig+"]
    assert {"ave", "std", "ci_low", "ci_high"} <= set(res.summary.columns)
    assert set(res.tests["method"]) <= {"my-cosine", "sig+"}
    facts = data.spec("wine").facts()
    assert facts["train_size"] == 130 and facts["num_classes"] == 3
    methods.names()  # the user method stays registered in this process


def test_a_model_registered_in_this_process_refuses_worker_processes(tmp_path: Path) -> None:
    local_only = lambda shape, classes: torch.nn.Sequential(  # noqa: E731
        torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), classes)
    )
    study = api.study("local", datasets=["fashion-mnist"], models={"lin": local_only},
                      methods=["sig+"], trials=1, epochs=1, subset=256)  # fmt: skip
    with pytest.raises(StudyError, match="registered in this process only.*workers=1"):
        api.run(study, tmp_path / "s.sqlite", workers=2, progress=False)
    assert not (tmp_path / "s.sqlite").exists()
    models.unregister("lin")


def test_results_names_the_study_when_a_store_holds_several(tmp_path: Path) -> None:
    store = tmp_path / "two.sqlite"
    with Store(store) as s:
        s.ensure_study("a", {"datasets": [], "models": [], "methods": [], "trials": 1})
        s.ensure_study("b", {"datasets": [], "models": [], "methods": [], "trials": 1})
    with pytest.raises(StudyError, match="holds 2 studies"):
        api.results(store)
    with pytest.raises(StoreError, match="no study 'c'"):
        api.results(store, "c")


def test_a_study_holding_a_named_user_dataset_grows_in_a_process_that_never_defined_it(
    on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annealbench.study import Study, grow_study

    data.define("cancer", str(on_path / "data.npz"))
    first = Study("named", ("cancer",), ("mynets:build",), ("sig+",), 1, {"epochs": 1})
    with Store(tmp_path / "s.sqlite") as store:
        grow_study(store, first)
        monkeypatch.setattr(data, "REGISTRY", {k: v for k, v in data.REGISTRY.items()
                                               if k != "cancer"})  # fmt: skip
        grown = Study("named", ("fashion-mnist",), ("mynets:build",), ("sig+",), 1,
                      {"epochs": 1})  # fmt: skip
        _, study = grow_study(store, grown)
        assert set(study.datasets) == {"cancer", "fashion-mnist"}
