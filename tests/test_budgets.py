"""Several training budgets (issue 13): every final trial also at shorter budgets, each a
whole schedule compressed; WSD's shorter budgets keep the full run's warmup and plateau and
branch from its checkpoint, equal bit for bit to training them from scratch; the report
scores and ranks each budget."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from annealbench import schedules, training
from annealbench.errors import StudyError
from annealbench.report import load_analysis, report_store
from annealbench.store import Store
from annealbench.study import Study, run_study
from annealbench.training import RunConfig
from annealbench.training.parts import RatePlan

OPTIONS = {"epochs": 10, "subset": 256, "device": "cpu", "batch_size": 64}
STUDY = Study("budgets", ("fashion-mnist",), ("nn2",), ("wsd", "sig+"), 1, OPTIONS,
              budgets=(50, 100))  # fmt: skip


def test_a_study_with_budgets_runs_every_trial_at_each_budget() -> None:
    study = dataclasses.replace(STUDY, budgets=(25, 50), options={**OPTIONS, "epochs": 8})
    configs = study.configs()
    assert study.n_runs == len(configs) == 2 * 3
    assert [(c.epochs, c.full_epochs) for c in configs] == [
        (8, None), (8, None), (4, 8), (4, 8), (2, 8), (2, 8)
    ]  # fmt: skip
    assert [c.budget for c in configs] == [100, 100, 50, 50, 25, 25]
    # the full budget's runs are the same runs as a study without budgets
    plain = dataclasses.replace(study, budgets=())
    assert [c.key() for c in plain.configs()] == [c.key() for c in configs[:2]]
    assert study.settings()["budgets"] == [25, 50, 100]


@pytest.mark.parametrize(
    "budgets,epochs,message",
    [((25,), 6, "budget 25% of 6 epochs is 1.5 epochs"),
     ((0,), 8, "whole percentages from 1 to 100"),
     ((150,), 8, "whole percentages from 1 to 100"),
     ((10,), 10, "4 units are too few for a cooldown"),
     ((10,), 10, "cooldown would start during the full run's warmup")],
)  # fmt: skip
def test_bad_budgets_are_refused_before_anything_is_stored(
    tmp_path: Path, budgets: tuple, epochs: int, message: str
) -> None:
    options = {**OPTIONS, "epochs": epochs}
    if "warmup" in message:
        options["batch_size"] = 16  # 16 updates an epoch: 16 of 160 start to cool at 13
    study = dataclasses.replace(STUDY, budgets=budgets, options=options)
    with pytest.raises(StudyError, match=message):
        run_study(study, tmp_path / "s.sqlite", progress=False)
    assert not (tmp_path / "s.sqlite").exists()


def test_a_shorter_wsd_budget_shares_the_trunk_then_cools_down_by_its_formula() -> None:
    steps = 4
    full = RatePlan.for_run(RunConfig("fashion-mnist", "nn2", "wsd", epochs=10), steps)
    short = RatePlan.for_run(
        RunConfig("fashion-mnist", "nn2", "wsd", epochs=5, full_epochs=10), steps
    )
    shared = short.shared_updates()
    assert shared == 16  # the cooldown is the last 20% of 5 epochs x 4 updates
    assert [short.rate(k) for k in range(shared)] == [full.rate(k) for k in range(shared)]
    # warmup over the full run's first 10% (4 updates), then the plateau at 0.1
    assert full.rate(0) == pytest.approx(0.01) and full.rate(4) == 0.1 == short.rate(15)
    # the cooldown: 1 - sqrt from 0.1 to 0 over the last 4 updates of 20
    for k in range(16, 20):
        assert short.rate(k) == pytest.approx(0.1 * (1 - math.sqrt((k - 16) / 4)), abs=1e-15)
    # any other schedule is the whole curve compressed into the shorter run
    sig = RatePlan.for_run(
        RunConfig("fashion-mnist", "nn2", "sig+", epochs=5, full_epochs=10), steps
    )
    curve = schedules.get("sig+")
    assert sig.shared_updates() == 0
    assert np.allclose([sig.rate(k) for k in range(20)], curve(np.arange(20) / 20), rtol=0)


def test_branched_wsd_budgets_equal_the_same_runs_from_scratch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "s.sqlite"
    outcome = run_study(STUDY, store, progress=False, batched="off", workers=1)
    assert outcome.counts == {"done": 4}
    said = capsys.readouterr().out
    assert "1 shorter WSD run(s) started from their full-budget trunk's checkpoint" in said
    assert "4 of their 5 epochs not trained again (80% of their compute saved)" in said
    with Store(store, readonly=True) as handle:
        runs = handle.runs_frame("budgets")
        epochs = handle.epochs_frame("budgets")
    branch = runs[(runs["method"] == "wsd") & (runs["budget"] == 50)].iloc[0]
    stored = epochs[epochs["run_id"] == branch["run_id"]].reset_index(drop=True)
    scratch = training.train(
        RunConfig(
            "fashion-mnist",
            "nn2",
            "wsd",
            epochs=5,
            full_epochs=10,
            **{k: v for k, v in OPTIONS.items() if k != "epochs"},
        )  # fmt: skip
    )
    assert len(stored) == len(scratch.epochs) == 5
    for row, record in zip(stored.itertuples(), scratch.epochs, strict=True):
        for name in ("lr", "train_loss", "train_acc", "test_loss", "test_acc"):
            assert getattr(row, name) == getattr(record, name), (record.epoch, name)
    # the report scores each budget on its own and keeps its tables at the full budget
    analysis = load_analysis(store)
    assert set(analysis.summary["method"]) == {"wsd", "sig+"}
    assert len(analysis.scores) == 2
    table = analysis.budgets
    assert sorted(table["budget"]) == [50, 50, 100, 100]
    assert set(table["rank"]) == {1.0, 2.0}
    report_store(store, tmp_path / "report")
    assert (tmp_path / "report" / "budgets.csv").exists()
    assert (tmp_path / "report" / "figures" / "budgets_fashionmnist_nn2.png").exists()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Results against the training budget" in page and "best by budget" in page


def test_budgets_come_from_the_command_line_and_study_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from annealbench import study_file
    from annealbench.cli import app

    text = 'datasets = ["fashion-mnist"]\nmodels = ["nn2"]\nbudgets = [50, 100]\n'
    assert study_file.parse(text, "s", None, where="s.toml").budgets == (50, 100)
    with pytest.raises(StudyError, match="budgets must be a list of percentages"):
        study_file.parse(text.replace("[50, 100]", "50"), "s", None, where="s.toml")
    store = tmp_path / "s.sqlite"
    args = ["run", "--datasets", "fashion-mnist", "--models", "nn2", "--store", str(store)]
    bad = CliRunner().invoke(app, [*args, "--budgets", "25,half"])
    assert bad.exit_code == 2 and "--budgets must be whole percentages" in bad.output
    odd = CliRunner().invoke(app, [*args, "--epochs", "6", "--budgets", "25,100"])
    assert odd.exit_code == 2 and "budget 25% of 6 epochs is 1.5 epochs" in odd.output
    assert not store.exists()
