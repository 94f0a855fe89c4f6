"""The command line as a new user meets it: one default store for ``run``, ``status``,
``export`` and ``report``; every ``next:`` hint runs as printed; ``--version``; plurals;
no empty folders left behind; ``train --json`` and ``status --json``; help text that shows
``[methods.NAME]``.

Everything runs in this process (``typer.testing.CliRunner``) on real Fashion-MNIST: nn2,
one epoch on the first 256 training images.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import annealbench
from annealbench.cli import app
from annealbench.cli.app import DEFAULT_STORE, plural, report_folder

RUN = ["run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+",
       "--trials", "1", "--epochs", "1", "--subset", "256", "--workers", "1",
       "--no-progress", "--device", "cpu"]  # fmt: skip
TRAIN = ["train", "--dataset", "fashion-mnist", "--model", "nn2", "--method", "sig+",
         "--epochs", "1", "--subset", "256", "--device", "cpu"]  # fmt: skip


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"annealbench {shlex.join(args)}:\n{result.output}"
    return result


@pytest.fixture(scope="module")
def studied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder where ``annealbench run`` (no --store) trained one run; and its output."""
    folder = tmp_path_factory.mktemp("cwd")
    before = Path.cwd()
    os.chdir(folder)
    try:
        output = invoke(*RUN).output
    finally:
        os.chdir(before)
    return folder, output


@pytest.fixture
def in_study(studied: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """In the folder of :func:`studied`; returns its ``run`` output."""
    monkeypatch.chdir(studied[0])
    return studied[1]


def test_run_status_export_report_share_one_default_store(in_study: str) -> None:
    assert DEFAULT_STORE.is_file() and f"-> {DEFAULT_STORE}" in in_study
    status = invoke("status").output
    assert "fashion-mnist" in status and "nn2" in status
    assert "(1 row)" in invoke("export", "--out", "tables").output
    # `report` reads it too (and, without --out, writes beside it: the next test runs it)
    for command in ("run", "status", "export", "report"):
        assert str(DEFAULT_STORE) in invoke(command, "--help").output, command


def test_every_next_hint_runs_as_printed(in_study: str) -> None:
    hints = [line.removeprefix("next: ") for line in in_study.splitlines()]
    hints = [hint for hint in hints if hint.startswith("annealbench ")]
    assert hints == [f"annealbench report --store {DEFAULT_STORE}"], in_study
    for hint in hints:
        output = invoke(*shlex.split(hint)[1:]).output
        assert "report.html" in output
    assert (report_folder(DEFAULT_STORE) / "report.html").is_file()


def test_report_out_defaults_beside_the_store() -> None:
    assert report_folder(Path("out/quick/results.sqlite")) == Path("out/quick/results-report")
    assert report_folder(Path("annealbench.sqlite")) == Path("annealbench-report")


def test_version() -> None:
    result = invoke("--version")
    assert result.stdout.strip() == f"annealbench {annealbench.__version__}"


def test_messages_use_the_right_plurals(in_study: str) -> None:
    assert "1 run (1 dataset x 1 model x 1 method x 1 trial)" in in_study
    assert "of 1 run\n" in in_study and "1 runs" not in in_study
    assert [plural(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    presets = invoke("presets").output
    assert " 1 trials" not in presets and " 1 methods" not in presets


def test_a_study_leaves_no_empty_checkpoint_folder(
    in_study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its one run wrote a checkpoint each epoch and deleted it when done: no folder stays.
    A folder that was there before the study is the user's: it stays."""
    assert not Path(f"{DEFAULT_STORE}.checkpoints").exists()
    monkeypatch.chdir(tmp_path)
    Path("mine").mkdir()
    invoke(*RUN, "--checkpoint-dir", "mine")
    assert Path("mine").is_dir() and not any(Path("mine").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if "sqlite" not in p.name) == ["mine"]


def test_train_json_prints_one_json_object_and_nothing_else() -> None:
    result = invoke(*TRAIN, "--json")
    run = json.loads(result.stdout)  # the whole of stdout
    assert set(run) == {"config", "status", "error", "resumed_from", "epochs"}
    assert run["status"] == "done" and run["config"]["method"] == "sig+"
    assert run["config"]["subset"] == 256 and len(run["epochs"]) == 1
    assert set(run["epochs"][0]) >= {"epoch", "lr", "train_loss", "test_acc", "wall_time"}


def test_status_json(in_study: str) -> None:
    status = json.loads(invoke("status", "--json").stdout)
    assert status["total"]["done"] == 1 and status["total"]["total"] == 1
    assert [(row["dataset"], row["model"]) for row in status["rows"]] == [("fashion-mnist", "nn2")]
    assert status["failed"] == [] and status["orphaned"] == 0


@pytest.mark.parametrize("command", ["train", "run"])
def test_help_shows_methods_tables_literally(command: str) -> None:
    text = " ".join(invoke(command, "--help").output.split())
    assert "[methods.NAME]" in text
