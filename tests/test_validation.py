"""Everything ``annealbench run`` and ``train`` are given is checked before anything is
written: a study that cannot run never leaves a study row (which would block its name),
and every bad value is one line naming the option, the value and the fix, with exit 2.

Each test reproduces a command of issue 10 on the grid ``B`` (one run of nn2 on 128
Fashion-MNIST images) and checks the message, the exit status and the store.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annealbench import executors, methods
from annealbench.cli import app
from annealbench.errors import ExecutorError, MethodError, StudyError
from annealbench.store import Store
from annealbench.study import MAX_RUNS, Study, preflight

B = ["--datasets", "fashion-mnist", "--models", "nn2", "--trials", "1", "--epochs", "1",
     "--subset", "128", "--threads", "1", "--workers", "1", "--no-progress"]  # fmt: skip
GRID = Study("v", ("fashion-mnist",), ("nn2",), ("sig+",), 1, {"epochs": 1, "subset": 128})

runner = CliRunner()


def nothing_stored(store: Path) -> bool:
    """The store was never created, or holds no study."""
    if not store.exists():
        return True
    with Store(store, readonly=True) as s:
        return s.study_names() == []


def refused(tmp_path: Path, *args: str | Path, match: str, command: str = "run") -> str:
    """Run ``annealbench run B ARGS --store`` (or ``command ARGS``); it must stop with exit 2
    and one line containing ``match``, print no header, and store nothing."""
    store = tmp_path / "s.sqlite"
    argv = [command, *B, *args, "--store", store] if command == "run" else [command, *args]
    result = runner.invoke(app, [str(a) for a in argv])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert match in output, output
    assert " runs (" not in output and " run (" not in output, output  # no header line
    assert nothing_stored(store)
    return output


def methods_file(tmp_path: Path, body: str, name: str = "x") -> Path:
    path = tmp_path / "methods.toml"
    path.write_text(f'[methods.{name}]\noptimizer = "sgd"\n{body}\n', encoding="utf-8")
    return path


# -- (4) a number too large for the store ------------------------------------------------


def test_an_epoch_count_too_large_to_store_is_refused_before_the_store_exists(
    tmp_path: Path,
) -> None:
    out = refused(tmp_path, "--epochs", "99999999999999999999", match="--epochs 99999999999999")
    assert "too large" in out and "give a smaller number" in out
    assert not (tmp_path / "s.sqlite").exists()
    assert not (tmp_path / "s.sqlite.checkpoints").exists()


# -- (6) bad method definitions, paths and threads ---------------------------------------


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        ("-0.5", "lr must be > 0, got -0.5"),
        ("nan", "lr must be finite, got nan"),
        ("inf", "lr must be finite, got inf"),
        ('"fast"', "lr must be a number, got 'fast'"),
    ],
)
def test_a_bad_constant_rate_names_the_file_the_method_and_the_fix(
    tmp_path: Path, lr: str, message: str
) -> None:
    path = methods_file(tmp_path, f"lr = {lr}", name="bad-rate")
    out = refused(tmp_path, "--methods", "bad-rate", "--methods-file", path, match=message)
    assert f"methods file {path}: method 'bad-rate':" in out and "such as lr = 0.01" in out
    assert "bad-rate" not in methods.names()  # nothing of a bad file is registered


def test_a_methods_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "--methods-file", tmp_path, match=f"methods file {tmp_path} is a folder")


def test_a_binary_methods_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "methods.toml"
    path.write_bytes(bytes(range(256)) * 4)
    refused(tmp_path, "--methods-file", path, match="is not a text file (not UTF-8)")


def test_a_fifo_as_methods_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    fifo = tmp_path / "methods.fifo"
    os.mkfifo(fifo)  # reading it would block forever: a subprocess, so a hang fails the test
    proc = subprocess.run(
        [sys.executable, "-c", "from annealbench.cli import main; main()", "run", *B,
         "--methods-file", str(fifo), "--store", str(tmp_path / "s.sqlite")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"methods file {fifo} is not a regular file" in proc.stderr
    assert nothing_stored(tmp_path / "s.sqlite")


@pytest.mark.parametrize("threads", ["-2", "0"])
def test_threads_below_one_are_refused_before_the_study_is_stored(
    tmp_path: Path, threads: str
) -> None:
    out = refused(tmp_path, "--threads", threads, match="--threads must be an integer >= 1")
    assert f"got {threads}" in out


def test_a_checkpoint_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.write_text("a file")
    refused(
        tmp_path, "--checkpoint-dir", target, match=f"--checkpoint-dir {target} is not a folder"
    )
    assert target.read_text() == "a file"


def test_a_checkpoint_dir_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    refused(tmp_path, "--checkpoint-dir", tmp_path / "file" / "ckpt", match="is not a folder")


# -- (7) what every run would fail on: checked before the study is stored ----------------


def test_a_subset_larger_than_the_training_set_is_refused(tmp_path: Path) -> None:
    out = refused(tmp_path, "--subset", "100000", match="--subset 100000 is more than the 60,000")
    assert "give at most 60000" in out


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("{ nonsense = 3 }", "unexpected keyword argument 'nonsense'"),
        ("{ momentum = -5 }", "Invalid momentum value: -5"),
        ("{ weight_decay = nan }", "optimizer_settings.weight_decay must be finite"),
        ("{ lr = 0.1 }", "optimizer_settings may not set lr"),
    ],
)
def test_bad_optimizer_settings_are_refused_and_the_fixed_file_runs(
    tmp_path: Path, settings: str, message: str
) -> None:
    path = methods_file(tmp_path, f'schedule = "sig"\noptimizer_settings = {settings}')
    out = refused(tmp_path, "--methods", "x", "--methods-file", path, match=message)
    assert "method 'x'" in out
    assert "sgd takes momentum, dampening, weight_decay" in out or "lr" in settings
    if "nonsense" not in settings:
        return
    # The name is not blocked by a stored broken definition: the fixed file runs.
    path.write_text('[methods.x]\noptimizer = "sgd"\nschedule = "sig"\n', encoding="utf-8")
    store = tmp_path / "s.sqlite"
    argv = ["run", *B, "--methods", "x", "--methods-file", path, "--store", store]
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output


def test_a_data_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.write_text("")
    refused(tmp_path, "--data-root", root, match=f"--data-root {root} is not a folder")


def test_a_model_that_does_not_fit_the_data_is_refused(tmp_path: Path) -> None:
    argv = ["--models", "nn2,resnet18"]
    refused(tmp_path, *argv, match="model resnet18 does not fit fashion-mnist")


# -- (9) silently accepted values, the header, Ctrl-C twice, a FIFO checkpoint -----------


def test_negative_max_retries_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "--max-retries", "-1", match="--max-retries must be an integer >= 0")


def test_an_empty_study_name_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, "--study", "", match="the study name must be a non-empty string")
    refused(tmp_path, "--study", "  ", match="give --study NAME")


def test_negative_trials_print_no_header(tmp_path: Path) -> None:
    out = refused(tmp_path, "--trials", "-1", match="--trials must not be negative, got -1")
    assert "-1 runs" not in out


def test_the_header_counts_in_the_right_plural(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    argv = ["run", *B, "--methods", "sig+,exp", "--epochs", "1", "--store", store]
    result = runner.invoke(app, [str(a) for a in argv])
    assert result.exit_code == 0, result.output
    assert "2 runs (1 dataset x 1 model x 2 methods x 1 trial)" in result.output


def _epochs_stored(store: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM epoch").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("gap", [0.02, 0.3])
def test_a_second_ctrl_c_while_stopping_exits_quietly_with_130(tmp_path: Path, gap: float) -> None:
    store = tmp_path / "s.sqlite"
    argv = ["run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+",
            "--trials", "2", "--epochs", "50", "--subset", "2048", "--threads", "1",
            "--workers", "1", "--no-progress", "--batched", "off",
            "--store", str(store)]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", "from annealbench.cli import main; main()", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _epochs_stored(store) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the process group
    time.sleep(gap)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    with Store(store, readonly=True) as s:  # the runs are kept for the rerun
        assert set(s.runs_frame()["status"]) <= {"pending", "running", "done"}


def test_train_refuses_a_fifo_checkpoint_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    argv = ["train", "--dataset", "fashion-mnist", "--model", "nn2", "--method", "sig+",
            "--epochs", "1", "--subset", "128", "--device", "cpu",
            "--checkpoint", str(fifo)]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", "from annealbench.cli import main; main()", *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--checkpoint {fifo} exists and is not a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr


TRAIN = ["--dataset", "fashion-mnist", "--model", "nn2", "--method", "sig+", "--epochs", "1",
         "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--subset", "100000"], "--subset 100000 is more than the 60,000 training images"),
        (["--checkpoint", "{tmp}"], "exists and is not a regular file"),
        (["--checkpoint", "{tmp}/file/run.pt"], "--checkpoint's folder"),
        (["--data-root", "{tmp}/file"], "is not a folder"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
        (["--methods-file", "{tmp}"], "is a folder"),
    ],
)
def test_train_checks_everything_before_loading_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from annealbench import data

    def load(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(data, "load", load)
    (tmp_path / "file").write_text("")
    argv = [a.format(tmp=tmp_path) for a in args]
    refused(tmp_path, *TRAIN, "--subset", "128", *argv, match=message, command="train")


# -- the checks themselves ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "study name must be a non-empty string"),
        ({"trials": True}, "--trials must be a whole number"),
        ({"trials": MAX_RUNS + 1}, "one study holds at most"),
        ({"options": {"epochs": 2**63}}, "--epochs 9223372036854775808 is too large"),
        ({"options": {"batch_size": 2**70}}, "--batch-size"),
        ({"options": {"bf16": "yes"}}, "bf16 must be true or false"),
        ({"options": {"subset": 60_001}}, "more than the 60,000 training images"),
        ({"datasets": ("fashion-mnist", "cifar10"), "options": {"subset": 50_001}}, "of cifar10"),
        ({"models": ("vgg19",)}, "model vgg19 does not fit fashion-mnist"),
    ],
)
def test_study_validate_refuses(change: dict, message: str) -> None:
    import dataclasses

    with pytest.raises(StudyError, match=message):
        dataclasses.replace(GRID, **change).validate()


def test_study_validate_builds_every_methods_optimizer(tmp_path: Path) -> None:
    bad = methods.Method("bad-momentum", "sgd", "sig", optimizer_settings={"momentum": -1})
    methods.register(bad, replace=True)  # register() alone does not build the optimizer
    study = Study("v", ("fashion-mnist",), ("nn2",), ("sig+", "bad-momentum"), 1, {"epochs": 1})
    with pytest.raises(StudyError, match="method 'bad-momentum' cannot train.*momentum"):
        study.validate()


def test_a_methods_file_with_one_bad_method_registers_none(tmp_path: Path) -> None:
    path = tmp_path / "methods.toml"
    path.write_text(
        '[methods.good-one]\noptimizer = "adamw"\nlr = 3e-4\n'
        '[methods.bad-one]\noptimizer = "adam"\noptimizer_settings = { betas = [0.9, 2.0] }\n',
        encoding="utf-8",
    )
    with pytest.raises(MethodError, match="method 'bad-one': bad optimizer_settings"):
        methods.load_file(path)
    assert "good-one" not in methods.names() and "bad-one" not in methods.names()


def test_method_settings_must_be_tables() -> None:
    with pytest.raises(MethodError, match="optimizer_settings must be a table"):
        methods.Method("t", "sgd", "sig", optimizer_settings=3)  # type: ignore[arg-type]
    with pytest.raises(MethodError, match="unknown optimizer"):
        methods.Method("t", ["sgd"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "--threads must be an integer >= 1"),
        ({"threads": -2}, "--threads must be an integer >= 1"),
        ({"max_retries": -1}, "--max-retries must be an integer >= 0"),
        ({"max_retries": 1.5}, "--max-retries must be an integer >= 0"),
        ({"workers": 0}, "--workers must be 'auto' or an integer >= 1"),
        ({"cpus_per_run": math.nan}, "--cpus-per-run must be a number > 0"),
        ({"gpu_fraction": 0.0}, "--gpu-fraction must be in (0, 1]"),
    ],
)
def test_executor_options_are_checked_without_starting_anything(kwargs: dict, message: str) -> None:
    with pytest.raises(ExecutorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        executors.check_options("ray" if "gpu_fraction" in kwargs else "local", **kwargs)


def test_ray_missing_is_found_before_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    refused(tmp_path, "--executor", "ray", match="pip install 'annealbench[ray]'")


def test_preflight_writes_nothing(tmp_path: Path) -> None:
    store, ckpt = tmp_path / "s.sqlite", tmp_path / "deep" / "ckpt"
    preflight(GRID, store, checkpoint_dir=ckpt, threads=1, data_root=tmp_path / "no-data")
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StudyError, match="cannot be created in"):
        preflight(GRID, tmp_path / "s.sqlite", checkpoint_dir=locked / "ckpt")
