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


def test_each_new_curve_follows_its_formula() -> None:
    p = np.linspace(0, 1, 101)
    at = {name: methods.get(name).schedule_for("nn2") for name in methods.MODERN_METHODS}
    assert np.allclose(at["cosine0"](p), 0.05 * (1 + np.cos(np.pi * p)), atol=1e-12)
    assert np.allclose(at["cosine"](p), 0.001 + 0.0495 * (1 + np.cos(np.pi * p)), atol=1e-12)
    assert np.allclose(at["linear0"](p), 0.1 * (1 - p), atol=1e-12)
    ramp = p[p <= 0.1]  # the paper's warmup: linear from 0.01 to 0.1 over the first 10%
    assert np.allclose(at["linear0+"](ramp), 0.01 + 0.09 * ramp / 0.1, atol=1e-12)
    after = p[p >= 0.1]
    assert np.allclose(at["linear0+"](after), 0.1 * (1 - (after - 0.1) / 0.9), atol=1e-12)
    up, start = p[p <= 0.3], 0.1 / 25  # one-cycle: cosine up from lr/25 to lr over 30%
    rising = start + (0.1 - start) * (1 - np.cos(np.pi * up / 0.3)) / 2
    assert np.allclose(at["onecycle"](up), rising, atol=1e-12)
    assert at["onecycle"](1.0) == pytest.approx(start / 1e4)
    assert at["adamw-cosine"](0.1) == pytest.approx(1e-3) and at["sf-sgd"](0.5) == 0.1
    assert np.allclose(at["sf-adamw"](after), 1e-3)


def test_schedule_free_evaluation_equals_the_packages_own_loop() -> None:
    """The stepper's train/eval switching gives what schedulefree's documented loop gives:
    ``optimizer.train()`` before training steps, ``optimizer.eval()`` before evaluating."""
    import copy

    import schedulefree
    import torch
    import torch.nn.functional as F

    from annealbench.training.single import SingleStepper

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))  # fmt: skip
    theirs = copy.deepcopy(model)
    x, y = torch.randn(4, 8, 1, 3, 4), torch.randint(0, 3, (4, 8))
    x_eval, y_eval = torch.randn(20, 1, 3, 4), torch.randint(0, 3, (20,))
    rates = [0.05, 0.1, 0.1, 0.1]
    ours = SingleStepper(config("sf-sgd"), model, torch.device("cpu"))
    optimizer = schedulefree.SGDScheduleFree(theirs.parameters(), lr=0.1, momentum=0.9,
                                             weight_decay=5e-4)  # fmt: skip
    for _epoch in range(2):  # train, evaluate, train again: the switch both ways
        ours.begin_epoch([rates])
        theirs.train()
        optimizer.train()
        for step in range(4):
            ours.step(step, x[step : step + 1], y[step : step + 1])
            for group in optimizer.param_groups:
                group["lr"] = rates[step]
            optimizer.zero_grad()
            F.cross_entropy(theirs(x[step]), y[step]).backward()
            optimizer.step()
        ((loss, accuracy),) = ours.evaluate(x_eval, y_eval)
        theirs.eval()
        optimizer.eval()
        with torch.no_grad():
            out = theirs(x_eval)
        assert loss == pytest.approx(float(F.cross_entropy(out, y_eval)), abs=1e-6)
        assert accuracy == float((out.argmax(1) == y_eval).sum()) * 100 / 20
        for a, b in zip(model.parameters(), theirs.parameters(), strict=True):
            assert torch.equal(a, b)  # the same eval point, bit for bit


def test_a_user_model_with_batchnorm_and_schedule_free_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bnmod.py").write_text(
        "import torch\n\n\ndef build(shape, classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 8),\n"
        "        torch.nn.BatchNorm1d(8), torch.nn.Linear(8, classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    bn = Study("bn", ("fashion-mnist",), ("bnmod:build",), ("sf-sgd",), 1, {"epochs": 1})
    with pytest.raises(StudyError, match="schedule-free methods would need its statistics"):
        bn.validate()


def test_an_api_method_may_not_redefine_a_built_in_name() -> None:
    from annealbench import api

    with pytest.raises(StudyError, match="'cosine' is built in and defined otherwise"):
        api.study("x", datasets=["fashion-mnist"], models=["nn2"],
                  methods=[api.Method("cosine", "adam", lr=1e-3)])  # fmt: skip
    same = api.study("y", datasets=["fashion-mnist"], models=["nn2"],
                     methods=[methods.get("cosine")])  # fmt: skip
    assert same.methods == ("cosine",)
