"""The examples in examples/ run as a user runs them, at a small scale.

Each test copies one example into a scratch folder and runs its README's commands there as
real processes (this venv's ``python`` and ``annealbench`` console script), with
``ANNEALBENCH_DATA`` pointed at a scratch data root (Fashion-MNIST is unpacked there from
Debian's ``dataset-fashion-mnist``, which CI installs) and matplotlib on Agg. Only what
would take minutes is cut: fewer images and epochs for the image folder, one worker, no
progress bars. Then the outcomes are checked in the store: every run done, a finite validation
accuracy on every epoch, a report that states the validation protocol, and (study file,
Python API) a second run that trains nothing: it resumes a finished study.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from annealbench.store import Store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ANNEALBENCH = Path(sys.executable).with_name("annealbench")
#: Added to every ``annealbench run``: one worker (a second one costs a torch import on a
#: 2-core machine and is not what is tested), and no progress bars in captured output.
RUN_EXTRA = ["--workers", "1", "--no-progress"]


def copy_example(name: str, tmp_path: Path) -> Path:
    """A scratch copy of examples/NAME (a folder, or a script put in a folder of its own)."""
    source = EXAMPLES / name
    folder = tmp_path / source.stem
    if source.is_dir():
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        folder.mkdir()
        shutil.copy(source, folder)
    return folder


def environment(tmp_path: Path) -> dict[str, str]:
    """The caller's environment (one CPU thread, from conftest) with a scratch data root."""
    return {**os.environ, "ANNEALBENCH_DATA": str(tmp_path / "data"), "MPLBACKEND": "Agg"}


def readme_commands(folder: Path) -> list[list[str]]:
    """The commands of the README's ```sh block, split into arguments."""
    text = (folder / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``args`` as a user would (``python`` and ``annealbench`` are this venv's); its
    stdout. A failure shows the command and everything it printed."""
    program = {"python": sys.executable, "annealbench": str(ANNEALBENCH)}[args[0]]
    proc = subprocess.run(
        [program, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{shlex.join(args)} in {cwd}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def stored(store: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(store, readonly=True) as db:
        return db.runs_frame(), db.epochs_frame()


def check_store(store: Path, methods: set[str], trials: int, epochs: int) -> pd.DataFrame:
    """Every run of the grid done, each with ``epochs`` epochs that all have a finite
    validation accuracy; the runs frame."""
    runs, records = stored(store)
    assert len(runs) == len(methods) * trials, runs[["method", "seed", "status"]]
    assert set(runs["method"]) == methods
    assert set(runs["seed"]) == set(range(trials))
    assert (runs["status"] == "done").all(), runs[["method", "seed", "status", "error"]]
    assert len(records) == len(runs) * epochs
    assert all(math.isfinite(v) for v in records["val_acc"]), records["val_acc"]
    assert all(math.isfinite(v) for v in records["test_acc"]), records["test_acc"]
    return runs


def check_resumed(store: Path, before: pd.DataFrame) -> None:
    """The rerun trained nothing: the same runs, none claimed again, no epochs added."""
    after, records = stored(store)
    columns = ["run_id", "status", "attempts", "started_at", "finished_at", "epochs_done"]
    pd.testing.assert_frame_equal(after[columns], before[columns])
    assert len(records) == int(before["epochs_done"].sum())


def check_report(folder: Path) -> None:
    tables = (folder / "report" / "tables.md").read_text()
    assert "validation protocol" in tables.lower()
    assert (folder / "report" / "report.html").is_file()


def test_tabular_mlp_readme(tmp_path: Path) -> None:
    """make_data.py writes data.npz; the README's `annealbench run` and `report`, as
    written (3 methods x 2 trials x 3 epochs on breast cancer: seconds). Resuming is
    checked by the other two tests (a rerun costs a process start, most of this test)."""
    folder = copy_example("tabular_mlp", tmp_path)
    env = environment(tmp_path)
    commands = readme_commands(folder)
    assert [c[:2] for c in commands] == [
        ["python", "make_data.py"], ["annealbench", "run"], ["annealbench", "report"]
    ]  # fmt: skip
    make_data, run_command, report = commands
    run_command += RUN_EXTRA
    run(make_data, folder, env)
    with np.load(folder / "data.npz") as arrays:
        assert arrays["x_train"].shape[1] == 30 and arrays["x_train"].dtype.name == "float32"
        assert len(arrays["y_train"]) + len(arrays["y_test"]) == 569
    run(run_command, folder, env)
    runs = check_store(folder / "s.sqlite", {"sig+", "cosine", "adam"}, trials=2, epochs=3)
    assert set(runs["model"]) == {"mynets:build"}
    run(report, folder, env)
    check_report(folder)


def test_imagefolder_cnn_study_file(tmp_path: Path) -> None:
    """prepare.py writes 30 train + 10 test PNGs per class; study.toml runs on them (4
    methods, one inline, x 2 trials; 2 epochs, not 5: the command line overrides the
    file); report; the same command again resumes and trains nothing."""
    folder = copy_example("imagefolder_cnn", tmp_path)
    env = environment(tmp_path)
    commands = readme_commands(folder)
    assert [c[:2] for c in commands] == [
        ["python", "prepare.py"], ["annealbench", "run"], ["annealbench", "report"]
    ]  # fmt: skip
    prepare, run_command, report = commands
    prepare += ["--per-class", "30", "--test-per-class", "10"]
    run_command += [*RUN_EXTRA, "--epochs", "2"]
    run(prepare, folder, env)
    for split, count in (("train", 30), ("test", 10)):
        classes = sorted((folder / "fashion-folder" / split).iterdir())
        assert len(classes) == 10 and classes[0].name == "0-T-shirt-top"
        assert all(len(list(c.glob("*.png"))) == count for c in classes)
    run(run_command, folder, env)
    methods = {"sig+", "cosine", "adam", "sgd-wsd"}
    runs = check_store(folder / "s.sqlite", methods, trials=2, epochs=2)
    assert set(runs["study"]) == {"fashion-folder-cnn"}
    assert set(runs["model"]) == {"mynets:build"}
    assert set(runs["dataset"]) == {str((folder / "fashion-folder").resolve())}
    run(report, folder, env)
    check_report(folder)
    run(run_command, folder, env)
    check_resumed(folder / "s.sqlite", runs)


def summary_rows(stdout: str) -> list[list[str]]:
    """The rows of the printed summary (between "summary:" and "paired tests:")."""
    table = stdout.split("summary:\n", 1)[1].split("paired tests:", 1)[0]
    header, *rows = table.strip().splitlines()
    assert header.split()[:2] == ["method", "trials"]
    return [row.split() for row in rows]


def test_python_api_script(tmp_path: Path) -> None:
    """python_api.py, small: one row per method in its summary, a store of done runs with
    validation; run again, it trains nothing and prints the same summary."""
    folder = copy_example("python_api.py", tmp_path)
    env = environment(tmp_path)
    command = ["python", "python_api.py", "--epochs", "2", "--trials", "2", "--store", "s.sqlite"]
    first = run(command, folder, env)
    assert "digits-mlp: 6 of 6 runs done" in first
    rows = summary_rows(first)
    assert sorted(row[0] for row in rows) == ["adam", "sgd-onecycle", "sig+"]
    assert all(row[1] == "2" for row in rows)  # trials per method
    assert sum(row[-1] == "True" for row in rows) == 1  # one method selected on validation
    runs = check_store(folder / "s.sqlite", {"sig+", "adam", "sgd-onecycle"}, trials=2, epochs=2)
    assert set(runs["model"]) == {"__main__:build"}
    second = run(command, folder, env)
    check_resumed(folder / "s.sqlite", runs)
    assert summary_rows(second) == rows
