"""A study can grow: a rerun with more trials, methods, datasets or models and the same run
options trains only the new runs; other run options or an edited user method are refused;
fewer is allowed (nothing is removed); two processes growing one study keep both additions.

Runs are tiny (Fashion-MNIST, 256 images, nn2, 1 epoch, one worker, one thread).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from annealbench import methods
from annealbench.store import Store, StoreError
from annealbench.study import Study, StudyError, grow_study, run_study

BASE = Study(
    name="grow",
    datasets=("fashion-mnist",),
    models=("nn2",),
    methods=("sig+", "adam"),
    trials=1,
    options={"epochs": 1, "subset": 256},
)
METRICS = ["lr", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time"]


def run(study: Study, store: Path):  # noqa: ANN201 - a StudyOutcome
    return run_study(study, store, workers=1, threads=1, progress=False, batched="off")


def runs(store: Path) -> pd.DataFrame:
    with Store(store, readonly=True) as s:
        return s.runs_frame("grow").sort_values("run_id").reset_index(drop=True)


def epochs(store: Path, run_ids: list[int]) -> pd.DataFrame:
    with Store(store, readonly=True) as s:
        frame = s.epochs_frame("grow")
    kept = frame[frame["run_id"].isin(run_ids)].sort_values(["run_id", "epoch"])
    return kept[["run_id", "epoch", *METRICS]].reset_index(drop=True)


def settings(store: Path) -> dict:
    with Store(store, readonly=True) as s:
        return s.study_settings("grow")


def assert_untouched(store: Path, before: pd.DataFrame, old_epochs: pd.DataFrame) -> None:
    """The runs of ``before`` were not trained again: same claims, finish times and numbers."""
    after = runs(store)
    old = after[after["run_id"].isin(before["run_id"])].reset_index(drop=True)
    columns = ["run_id", "method", "seed", "status", "attempts", "started_at", "finished_at"]
    pd.testing.assert_frame_equal(old[columns], before[columns])
    pd.testing.assert_frame_equal(epochs(store, list(before["run_id"])), old_epochs)


def test_more_trials_train_only_the_new_seeds(tmp_path: Path, capsys) -> None:
    store = tmp_path / "s.sqlite"
    assert run(BASE, store).counts == {"done": 2}
    before = runs(store)
    old_epochs = epochs(store, list(before["run_id"]))
    capsys.readouterr()
    outcome = run(dataclasses.replace(BASE, trials=3), store)
    assert outcome.counts == {"done": 6} and outcome.total == 6
    assert "study 'grow' now holds 6 runs (4 added)" in capsys.readouterr().out
    assert_untouched(store, before, old_epochs)
    after = runs(store)  # what the report reads: every run of the grown study
    new = after[~after["run_id"].isin(before["run_id"])]
    assert sorted(zip(new["seed"], new["method"], strict=True)) == [
        (1, "adam"), (1, "sig+"), (2, "adam"), (2, "sig+")
    ]  # fmt: skip
    assert (new["attempts"] == 1).all() and (after["epochs_done"] == 1).all()
    assert new["run_id"].min() > before["run_id"].max()
    assert settings(store)["trials"] == 3


def test_more_methods_train_only_the_new_method(tmp_path: Path, capsys) -> None:
    store = tmp_path / "s.sqlite"
    run(BASE, store)
    before = runs(store)
    old_epochs = epochs(store, list(before["run_id"]))
    grown = dataclasses.replace(BASE, methods=("sig+", "str+", "adam"))
    assert run(grown, store).counts == {"done": 3}
    assert "now holds 3 runs (1 added)" in capsys.readouterr().out
    assert_untouched(store, before, old_epochs)
    after = runs(store)
    assert list(after["method"]) == ["sig+", "adam", "str+"]
    assert settings(store)["methods"] == ["sig+", "adam", "str+"]  # stored order, then new


def test_other_run_options_are_refused_with_the_differences(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    run(BASE, store)
    before, stored = runs(store), settings(store)
    changed = dataclasses.replace(BASE, trials=2, options={"epochs": 2, "subset": 256})
    with pytest.raises(StoreError) as info:
        run(changed, store)
    message = str(info.value)
    assert "run.epochs: stored 1, given 2" in message and "new --study name" in message
    assert "trials: stored 1, given 2" in message  # listed, as growth it would be fine
    assert "subset" not in message
    # Refused before anything is written: neither the grid nor the runs changed.
    assert settings(store) == stored
    pd.testing.assert_frame_equal(runs(store), before)


def test_an_edited_user_method_is_refused_and_new_seeds_keep_its_stored_definition(
    tmp_path: Path,
) -> None:
    store = tmp_path / "s.sqlite"
    methods.register(methods.Method("grow-mine", "sgd", "cosine", {"lr_up": 0.05}), replace=True)
    study = dataclasses.replace(BASE, methods=("sig+", "grow-mine"))
    with Store(store) as s:
        grow_study(s, study)  # stored, not trained
    methods.register(methods.Method("grow-mine", "sgd", "cosine", {"lr_up": 0.2}), replace=True)
    with Store(store) as s, pytest.raises(StoreError) as info:
        grow_study(s, dataclasses.replace(study, trials=2))
    assert "custom_methods.grow-mine.schedule_settings.lr_up: stored 0.05, given 0.2" in str(
        info.value
    )
    assert settings(store)["trials"] == 1
    # Not named, the stored user method grows with the stored definition, never the edited one.
    with Store(store) as s:
        grow_study(s, dataclasses.replace(BASE, methods=("sig+",), trials=2))
    frame = runs(store)
    mine = frame[frame["method"] == "grow-mine"]
    assert list(mine["seed"]) == [0, 1] and len(frame) == 4
    assert mine["run_key"].nunique() == 2
    assert all('"lr_up": 0.05' in config for config in mine["config"])


def test_fewer_trials_and_methods_remove_nothing_and_resume_the_whole_study(
    tmp_path: Path, capsys
) -> None:
    store = tmp_path / "s.sqlite"
    with Store(store) as s:  # stored (as if interrupted before training anything)
        grow_study(s, dataclasses.replace(BASE, trials=2))
    capsys.readouterr()
    outcome = run(dataclasses.replace(BASE, methods=("adam",)), store)
    assert "study 'grow' now holds 4 runs (0 added); 3 more than this command names" in (
        capsys.readouterr().out
    )
    # The study keeps its grid: every unfinished run trains, and the total says so.
    assert outcome.counts == {"done": 4} and outcome.total == 4
    assert settings(store)["trials"] == 2 and settings(store)["methods"] == ["sig+", "adam"]
    before = runs(store)
    assert run(dataclasses.replace(BASE, trials=1), store).counts == {"done": 4}
    pd.testing.assert_frame_equal(runs(store), before)


def test_a_new_dataset_that_a_stored_model_does_not_fit_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with Store(store) as s:
        grow_study(s, dataclasses.replace(BASE, models=("nn2", "vgg19")))
    with Store(store) as s, pytest.raises(StudyError, match="cannot grow study 'grow'.*vgg19"):
        grow_study(s, dataclasses.replace(BASE, datasets=("fashion-mnist", "mnist")))
    assert settings(store)["datasets"] == ["fashion-mnist"]


def _grow_in_process(path: str, methods_: tuple[str, ...], trials: int, start) -> None:  # noqa: ANN001
    start.wait()
    with Store(path) as s:
        grow_study(s, dataclasses.replace(BASE, methods=methods_, trials=trials))


def test_two_processes_growing_one_study_keep_both_additions(tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    with Store(store) as s:
        grow_study(s, dataclasses.replace(BASE, methods=("sig+",)))
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [
        context.Process(target=_grow_in_process, args=(str(store), ("sig+", "adam"), 1, start)),
        context.Process(target=_grow_in_process, args=(str(store), ("str+",), 3, start)),
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    stored = settings(store)
    assert set(stored["methods"]) == {"sig+", "adam", "str+"} and stored["trials"] == 3
    frame = runs(store)  # whoever grew second added the union's whole grid
    assert sorted(zip(frame["method"], frame["seed"], strict=True)) == sorted(
        (m, seed) for m in ("sig+", "adam", "str+") for seed in range(3)
    )


def test_a_grower_waits_for_another_and_keeps_its_addition(tmp_path: Path) -> None:
    """Two connections: the second grows while the first holds its write transaction; the
    stored grid ends with both additions (no lost update)."""
    store = tmp_path / "s.sqlite"
    with Store(store) as s:
        grow_study(s, dataclasses.replace(BASE, methods=("sig+",)))
    second: list[BaseException] = []

    def grow_second() -> None:
        try:
            with Store(store) as other:
                grow_study(other, dataclasses.replace(BASE, methods=("str+",)))
        except BaseException as exc:  # reported below
            second.append(exc)

    thread = threading.Thread(target=grow_second)

    def while_locked(merged: dict) -> None:
        thread.start()
        time.sleep(0.5)  # the second grower now waits on this transaction's lock

    with Store(store) as first:
        study = dataclasses.replace(BASE, methods=("adam",), trials=2)
        first.ensure_study("grow", study.settings(), check=while_locked)
    thread.join(60)
    assert not second and not thread.is_alive()
    stored = settings(store)
    assert stored["methods"] == ["sig+", "adam", "str+"] and stored["trials"] == 2
    assert len(runs(store)) == 6  # the second grew last: the union's whole grid
