"""Each method at its own peak rate (issue 13): a tuned study searches every method's
scale on the validation split with tuning seeds, then trains the final trials at each
method's best, both stages in the store, resumable after a kill."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from annealbench import tuning
from annealbench.errors import StudyError
from annealbench.store import Store
from annealbench.study import Study, run_study
from annealbench.training import RunConfig
from annealbench.training.config import TUNING_SEED, last_epochs
from annealbench.training.parts import RatePlan

OPTIONS = {"epochs": 2, "subset": 1024, "validation": 256, "device": "cpu"}
GRID = Study("tuned", ("fashion-mnist",), ("nn2",), ("sig+", "adam"), 2, OPTIONS,
             tune_scales=(0.1, 1.0, 10.0))  # fmt: skip


def test_lr_scale_multiplies_the_whole_curve() -> None:
    base = RatePlan.for_run(RunConfig("fashion-mnist", "nn2", "sig+", epochs=2), 10)
    twice = RatePlan.for_run(RunConfig("fashion-mnist", "nn2", "sig+", epochs=2, lr_scale=2.0), 10)
    assert [2 * r for r in base.rates(0, 20)] == twice.rates(0, 20)
    adam = RatePlan.for_run(RunConfig("fashion-mnist", "nn2", "adam", epochs=1, lr_scale=0.5), 5)
    assert adam.rate(3) == pytest.approx(5e-4)
    plain = RunConfig("fashion-mnist", "nn2", "sig+")
    assert "lr_scale" not in plain.identity()  # old stores keep their keys


def test_a_tuned_study_searches_then_trains_each_method_at_its_best(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    outcome = run_study(GRID, store, progress=False, batched="off")
    assert outcome.counts == {"done": 2 * 3 + 2 * 2}
    with Store(store, readonly=True) as s:
        search_runs, search_epochs = s.runs_frame(tuning=True), s.epochs_frame(tuning=True)
        final = s.runs_frame()
        settings = s.study_settings("tuned")
    assert settings["tune"] == {"scales": [0.1, 1.0, 10.0], "trials": 1}
    searched = search_runs.loc[search_runs["seed"] >= TUNING_SEED]
    assert len(searched) == 6 and set(searched["lr_scale"]) == {0.1, 1.0, 10.0}
    assert (final["seed"] < TUNING_SEED).all() and len(final) == 4
    # The choice, computed here by hand: the best mean validation accuracy over the last
    # 10% of epochs (the last epoch of 2), ties to the scale nearest 1.
    for method, runs in searched.groupby("method"):
        score = {}
        for run in runs.itertuples():
            curve = search_epochs.loc[search_epochs["run_id"] == run.run_id, "val_acc"]
            score[run.lr_scale] = curve.iloc[-last_epochs(len(curve)) :].mean()
        best = max(score, key=lambda s: (score[s], -abs(math.log(s))))
        assert set(final.loc[final["method"] == method, "lr_scale"]) == {best}
    again = run_study(GRID, store, progress=False, batched="off")  # nothing left to train
    assert again.counts == outcome.counts


def test_a_tuned_study_killed_in_its_search_resumes_to_the_same_results(tmp_path: Path) -> None:
    reference = tmp_path / "reference.sqlite"
    run_study(GRID, reference, progress=False, batched="off")
    store = tmp_path / "killed.sqlite"
    script = (
        "from annealbench.study import Study, run_study\n"
        f"grid = Study('tuned', ('fashion-mnist',), ('nn2',), ('sig+', 'adam'), 2, {OPTIONS!r},"
        " tune_scales=(0.1, 1.0, 10.0))\n"
        f"run_study(grid, {str(store)!r}, progress=False, batched='off')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if store.exists():
            with Store(store, readonly=True) as s:
                if (s.runs_frame(tuning=True)["status"] == "done").sum() >= 2:
                    break
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    outcome = run_study(GRID, store, progress=False, batched="off")
    assert outcome.counts == {"done": 10}
    metrics = ["method", "seed", "lr_scale", "epoch", "val_acc", "test_acc", "train_loss"]

    def numbers(path: Path) -> pd.DataFrame:
        with Store(path, readonly=True) as s:
            runs, epochs = s.runs_frame(tuning=True), s.epochs_frame(tuning=True)
        merged = epochs.merge(runs[["run_id", "lr_scale"]], on="run_id")
        return merged[metrics].sort_values(metrics[:4]).reset_index(drop=True)

    pd.testing.assert_frame_equal(numbers(store), numbers(reference))


@pytest.mark.parametrize(
    "change,message",
    [({"options": {"epochs": 2}}, "never on the test set: give --validation"),
     ({"tune_scales": (1.0, 1.0)}, "lists a scale twice"),
     ({"tune_scales": (0.0, 1.0)}, "must be positive numbers"),
     ({"tune_trials": 0}, "--tune-trials must be a whole number >= 1")],
)  # fmt: skip
def test_a_bad_tuning_grid_is_refused(change: dict, message: str) -> None:
    import dataclasses

    with pytest.raises(StudyError, match=message):
        dataclasses.replace(GRID, **change).validate()


def test_the_budget_is_the_same_for_every_method() -> None:
    line = tuning.budget_line(GRID)
    assert "3 runs per method and cell (3 scales 0.1, 1, 10 x 1 tuning seed(s)) x 2 epochs" in line
    per_method = pd.Series([c.method for c in GRID.configs()]).value_counts()
    assert set(per_method) == {3}


def test_a_scale_that_diverged_on_any_tuning_seed_is_not_chosen() -> None:
    import dataclasses

    study = dataclasses.replace(GRID, tune_trials=2)
    rows = [("fashion-mnist", "nn2", "sig+", scale, TUNING_SEED + i, status, value)
            for scale, i, status, value in [
                (1.0, 0, "done", 80.0), (1.0, 1, "done", 80.0),
                (10.0, 0, "done", 90.0), (10.0, 1, "diverged", float("nan")),
                (0.1, 0, "done", 70.0), (0.1, 1, "done", 72.0)]]  # fmt: skip
    search = pd.DataFrame(rows, columns=["dataset", "model", "method", "lr_scale", "seed",
                                         "status", "val_score"])  # fmt: skip
    assert tuning.choose(study, search) == {("fashion-mnist", "nn2", "sig+"): 1.0}
    unfinished = search.assign(status=["done"] * 5 + ["running"])
    assert tuning.choose(study, unfinished) == {}


def test_the_command_line_runs_a_tuned_study_and_status_shows_both_stages(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from annealbench.cli import app

    store = str(tmp_path / "cli.sqlite")
    args = ["run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+",
            "--trials", "1", "--epochs", "1", "--subset", "512", "--validation", "128",
            "--tune-scales", "0.5,2", "--store", store, "--workers", "1",
            "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 run per method" not in result.output and "2 runs per method" in result.output
    assert "tuned scales: sig+ x" in result.output
    status = CliRunner().invoke(app, ["status", "--store", store])
    assert "default (tuning)" in status.output and status.exit_code == 0
    bad_args = [a if a != "0.5,2" else "a,b" for a in args]
    bad = CliRunner().invoke(app, bad_args)
    assert bad.exit_code == 2 and "--tune-scales must be numbers" in bad.output


def test_a_tuned_study_keeps_the_user_method_definition_it_was_started_with(
    tmp_path: Path,
) -> None:
    """A rerun that does not load (or loads an edited) user method trains the stored one."""
    import dataclasses

    from annealbench import methods
    from annealbench.study import grow_study

    mine = methods.register(methods.Method("my-sgd", "sgd", "cosine"))
    grid = dataclasses.replace(GRID, methods=("my-sgd", "sig+"), tune_scales=(0.5, 1.0))
    with Store(tmp_path / "s.sqlite") as store:
        grow_study(store, grid)
        before = set(store.runs_frame(tuning=True)["run_key"])
        methods.register(dataclasses.replace(mine, schedule="linear"), replace=True)
        grow_study(store, dataclasses.replace(grid, methods=("sig+",)))
        assert set(store.runs_frame(tuning=True)["run_key"]) == before  # nothing added


def test_an_explicit_lr_scale_with_tuning_is_refused() -> None:
    import dataclasses

    grid = dataclasses.replace(GRID, options={**OPTIONS, "lr_scale": 1.0})
    with pytest.raises(StudyError, match="not both"):
        grid.validate()


def test_study_file_overrides_of_zero_or_empty_are_taken() -> None:
    from annealbench.study import load_preset

    assert load_preset("modern-quick", tune_scales=()).tune_scales == ()
    with pytest.raises(StudyError, match="--tune-trials must be a whole number >= 1"):
        load_preset("modern-quick", tune_trials=0).validate()
