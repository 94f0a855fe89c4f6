"""Today's baselines as built-in methods (issue 13): cosine and linear to zero, WSD with a
1-sqrt cooldown, one-cycle, AdamW with warmup and cosine, and schedule-free SGD and AdamW."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from annealbench import methods, schedules
from annealbench.errors import ConfigError, StudyError
from annealbench.store import Store
from annealbench.study import Study, load_preset, run_study
from annealbench.training import RunConfig, train


def config(method: str, **kw) -> RunConfig:
    return RunConfig("fashion-mnist", "nn2", method, epochs=2, subset=1024, device="cpu", **kw)


def test_every_modern_method_is_built_in_and_ends_where_it_says() -> None:
    assert set(methods.MODERN_METHODS) >= {
        "cosine", "cosine0", "linear0", "cosine+", "cosine0+", "linear0+", "wsd", "onecycle",
        "adamw-cosine", "sf-sgd", "sf-adamw",
    }  # fmt: skip
    end = {name: methods.get(name).schedule_for("nn2")(1.0) for name in methods.MODERN_METHODS}
    assert end["cosine0"] == end["linear0"] == end["wsd"] == end["cosine0+"] == 0.0
    assert end["cosine"] == pytest.approx(0.001)
    wsd = methods.get("wsd").schedule_for("nn2")
    p = np.linspace(0.8, 1.0, 11)  # the cooldown: 0.1 * (1 - sqrt(progress through it))
    assert np.allclose(wsd(p), 0.1 * (1 - np.sqrt((p - 0.8) / 0.2)), atol=1e-12)
    assert wsd(0.5) == 0.1 and wsd(0.0) == pytest.approx(0.01)
    assert methods.get("sf-sgd").schedule_free and not methods.get("wsd").schedule_free
    with pytest.raises(schedules.ScheduleError, match="cooldown must be one of"):
        schedules.get("wsd", cooldown="step")


@pytest.mark.parametrize("method", ["sf-sgd", "sf-adamw", "wsd", "adamw-cosine"])
def test_a_modern_method_resumes_bit_for_bit(method: str, tmp_path: Path) -> None:
    """Schedule-free runs evaluate and save at the averaged point and step at the train
    point: an interrupted run goes through the same switches as a straight one."""
    straight = train(config(method))

    class Stop(Exception):
        pass

    def stop(record) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(config(method), checkpoint_path=tmp_path / "c.pt", on_epoch=stop)
    resumed = train(config(method), checkpoint_path=tmp_path / "c.pt")
    plain = [dataclasses.replace(r, wall_time=0) for r in straight.epochs]
    assert plain == [dataclasses.replace(r, wall_time=0) for r in resumed.epochs]
    assert straight.epochs[-1].test_acc > 40  # it learned


def test_schedule_free_refuses_batchnorm_before_anything_is_stored(tmp_path: Path) -> None:
    import torch

    from annealbench import models
    from annealbench.training.single import SingleStepper

    net = models.build("resnet18", (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="schedule-free, and resnet18 has BatchNorm"):
        SingleStepper(RunConfig("cifar10", "resnet18", "sf-sgd"), net, torch.device("cpu"))
    grid = Study("s", ("fashion-mnist",), ("nn2",), ("sf-sgd",), 1, {"epochs": 1})
    grid.validate()  # nn2 has no BatchNorm: fine
    bn = Study("bn", ("cifar10",), ("resnet18",), ("sig+", "sf-sgd"), 1, {"epochs": 1})
    with pytest.raises(StudyError, match="schedule-free methods would need its statistics"):
        bn.validate()


def test_schedule_free_runs_train_alone_while_the_others_form_a_group(tmp_path: Path) -> None:
    grid = Study("mix", ("fashion-mnist",), ("nn2",), ("sig+", "sf-sgd", "wsd", "cosine0", "adam"),
                 1, {"epochs": 1, "subset": 512, "device": "cpu"})  # fmt: skip
    store = tmp_path / "s.sqlite"
    outcome = run_study(grid, store, progress=False, batched="on")
    assert outcome.counts == {"done": 5}
    with Store(store, readonly=True) as s:
        runs = s.runs_frame()
    started = runs.set_index("method")["started_at"]
    assert runs.set_index("method").loc["sf-sgd", "status"] == "done"
    assert started.notna().all()


def test_the_modern_quick_preset_is_valid_and_holds_the_baselines() -> None:
    study = load_preset("modern-quick")
    study.validate()
    assert {"sig+", "wsd", "sf-sgd", "adamw-cosine"} <= set(study.methods)
    assert study.options["validation"] == 0.1
