"""The methods: ``rms`` and ``adam`` are the paper's RMSprop and Adam (section 4.1), and user
methods from a ``--methods-file`` load, are refused with the reason, and train in worker
processes and on Ray, which never see the file: the definition travels inside the run.

Real Fashion-MNIST on 256 images, nn2, one epoch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from annealbench import executors, methods, schedules
from annealbench.cli import app
from annealbench.errors import MethodError
from annealbench.store import Store
from annealbench.training import RunConfig, train
from annealbench.training.loop import start
from annealbench.training.parts import RatePlan

SHALLOW = ("nn2", "nn3", "lenet4", "vgg9")
DEEP = ("vgg19", "resnet18", "resnet50", "densenet121", "googlenet")
README = Path(__file__).resolve().parents[1] / "README.md"
SUBSET = 256


@pytest.fixture(autouse=True)
def registered_methods_restored() -> Iterator[None]:
    """The methods files these tests load leave no user method behind for other tests."""
    before = dict(methods._USER)
    yield
    methods._USER.clear()
    methods._USER.update(before)


def readme_methods_file() -> str:
    """The example methods file of README's "The 12 methods"."""
    section = README.read_text().split("### The 12 methods", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "README's 'The 12 methods' has no TOML example"
    return match.group(1)


def one_param() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


# -- the paper's adaptive methods -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "optimizer"), [("rms", torch.optim.RMSprop), ("adam", torch.optim.Adam)]
)
def test_rms_and_adam_are_the_papers_optimizers(name: str, optimizer: type) -> None:
    """RMSprop and Adam (not AdamW: the weight decay is L2, as SGD's), weight decay 5e-4,
    torch's other defaults."""
    opt = methods.get(name).make_optimizer(one_param())
    assert type(opt) is optimizer
    group = opt.param_groups[0]
    assert group["weight_decay"] == 5e-4
    assert group["eps"] == 1e-8
    if name == "rms":
        assert (group["alpha"], group["momentum"], group["centered"]) == (0.99, 0, False)
    else:
        assert group["betas"] == (0.9, 0.999) and group["amsgrad"] is False
        assert not group.get("decoupled_weight_decay", False)


@pytest.mark.parametrize("name", ["rms", "adam"])
def test_rms_and_adam_hold_1e_3_on_shallow_models_and_1e_4_on_deep_ones(name: str) -> None:
    """The rate every update of a run gets (the loop's RatePlan), first to last."""
    for model, rate in [(m, 1e-3) for m in SHALLOW] + [(m, 1e-4) for m in DEEP]:
        dataset = "fashion-mnist" if model in SHALLOW else "cifar10"
        for step_per in ("iteration", "epoch"):
            config = RunConfig(dataset, model, name, epochs=100, step_per=step_per)
            plan = RatePlan.for_run(config, updates_per_epoch=391)
            rates = {plan.rate(k) for k in (0, 1, 390, 391, 19_550, 39_099, 39_100)}
            assert rates == {rate}, (model, step_per, rates)


@pytest.mark.parametrize(
    ("name", "optimizer"), [("rms", torch.optim.RMSprop), ("adam", torch.optim.Adam)]
)
def test_a_training_run_of_rms_and_adam_steps_that_optimizer_at_1e_3(
    name: str, optimizer: type
) -> None:
    trainer = start(
        [RunConfig("fashion-mnist", "nn2", name, epochs=1, subset=SUBSET, device="cpu")],
        batched=False,
    )
    trainer.train_epoch()
    opt = trainer.stepper.optimizer  # type: ignore[attr-defined]
    assert type(opt) is optimizer
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert all(len(state) for state in opt.state.values())  # it stepped


# -- methods files --------------------------------------------------------------------------


def test_the_readme_methods_file_loads_as_it_says(tmp_path: Path) -> None:
    path = tmp_path / "methods.toml"
    path.write_text(readme_methods_file())
    loaded = {m.name: m for m in methods.load_file(path)}
    assert set(loaded) == {"cosine-sgd", "adamw-3e-4"}
    assert {"cosine-sgd", "adamw-3e-4"} <= set(methods.names())
    cosine, adamw = methods.get("cosine-sgd"), methods.get("adamw-3e-4")
    assert cosine == loaded["cosine-sgd"] and adamw == loaded["adamw-3e-4"]
    # sgd: the paper's momentum and weight decay, annealed by cosine+ peaking at lr_up = 0.2.
    sgd = cosine.make_optimizer(one_param())
    assert type(sgd) is torch.optim.SGD
    assert (sgd.param_groups[0]["momentum"], sgd.param_groups[0]["weight_decay"]) == (0.9, 5e-4)
    expected = schedules.get("cosine+", lr_up=0.2)
    for model in ("nn2", "resnet18"):
        curve = cosine.schedule_for(model)
        assert [curve(p) for p in (0.0, 0.1, 0.5, 1.0)] == [
            expected(p) for p in (0.0, 0.1, 0.5, 1.0)
        ]
    assert max(curve(p / 100) for p in range(101)) == pytest.approx(0.2)
    # adamw: its own weight decay, at a constant 3e-4 on every model.
    opt = adamw.make_optimizer(one_param())
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.05
    for model in ("nn2", "resnet18"):
        assert {adamw.schedule_for(model)(p) for p in (0.0, 0.5, 1.0)} == {3e-4}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "methods.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[methods.x\noptimizer = 'sgd'\n", "is not valid TOML"),
        ("title = 'no methods'\n", r"has no \[methods.NAME\] tables"),
        ("[methods]\n", r"has no \[methods.NAME\] tables"),
        ("[methods]\nx = 3\n", "methods.x must be a table"),
        ("[methods.x]\noptimizer = 'lion'\nlr = 0.1\n", "unknown optimizer 'lion'; valid: sgd"),
        ("[methods.x]\noptimizer = 'sgd'\nlr = 0.1\nwarmup = 5\n", "unknown method settings"),
        ("[methods.x]\noptimizer = 'sgd'\n", "give a schedule or a constant lr"),
        ("[methods.x]\noptimizer = 'sgd'\nschedule = 'sig++'\n", "sig\\+\\+"),
        (
            "[methods.x]\noptimizer = 'sgd'\nschedule = 'sig'\nschedule_settings = { kapa = 1 }\n",
            "kapa",
        ),
        ("[methods.'sig+']\noptimizer = 'sgd'\nlr = 0.1\n", "one of the paper's methods"),
    ],
)
def test_a_bad_methods_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MethodError, match=message):
        methods.load_file(path)


def test_a_missing_methods_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MethodError, match=f"methods file {tmp_path / 'none.toml'} does not exist"):
        methods.load_file(tmp_path / "none.toml")


def test_a_setting_the_optimizer_does_not_take_is_refused_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[methods.x]\noptimizer = 'adam'\noptimizer_settings = { nesterov = true }\n"
    )
    with pytest.raises(MethodError, match="method 'x': bad optimizer.*nesterov"):
        methods.load_file(path)  # refused here, or at the latest when its optimizer is built
        methods.get("x").make_optimizer(one_param())


def test_the_commands_refuse_a_bad_methods_file_before_anything_runs(tmp_path: Path) -> None:
    bad = write(tmp_path, "[methods.x]\noptimizer = 'lion'\nlr = 0.1\n")
    store = tmp_path / "s.sqlite"
    for command in (
        ["train", "--dataset", "fashion-mnist", "--model", "nn2", "--method", "x"],
        ["run", "--datasets", "fashion-mnist", "--models", "nn2", "--methods", "x",
         "--store", str(store)],
    ):  # fmt: skip
        result = CliRunner().invoke(app, [*command, "--methods-file", str(bad)])
        assert result.exit_code == 2, result.output
        assert "unknown optimizer 'lion'" in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert not store.exists()


# -- user methods where the file is not -----------------------------------------------------


@pytest.fixture
def methods_file_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """README's methods file, deleted as soon as the command has read it; training in this
    process fails, so every run must be trained elsewhere, from its config alone."""
    path = write(tmp_path, readme_methods_file())
    load = methods.load_file

    def load_then_delete(file: str | Path) -> list[methods.Method]:
        loaded = load(file)
        Path(file).unlink()
        return loaded

    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a run was trained in the driver's process")

    monkeypatch.setattr(methods, "load_file", load_then_delete)
    monkeypatch.setattr(executors, "execute", not_here)
    monkeypatch.setattr(executors, "execute_group", not_here)
    return path


def trained_elsewhere(tmp_path: Path, methods_file: Path, *how: str) -> pd.DataFrame:
    """The README's two methods, one trial of one epoch, run with ``how``; their epochs."""
    store = tmp_path / "results.sqlite"
    result = CliRunner().invoke(app, [
        "run", "--datasets", "fashion-mnist", "--models", "nn2",
        "--methods", "cosine-sgd,adamw-3e-4", "--trials", "1", "--epochs", "1",
        "--subset", str(SUBSET), "--device", "cpu", "--no-progress",
        "--methods-file", str(methods_file), "--store", str(store), *how,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not methods_file.exists()
    with Store(store, readonly=True) as s:
        runs, epochs = s.runs_frame(), s.epochs_frame()
    assert sorted(runs["method"]) == ["adamw-3e-4", "cosine-sgd"]
    assert set(runs["status"]) == {"done"}, runs[["method", "status", "error"]]
    return epochs


def assert_trained_as_defined(epochs: pd.DataFrame) -> None:
    """Each stored run has the numbers of the same run trained here from the file's
    definition (bit for bit: one thread on both sides)."""
    assert len(epochs) == 2
    for row in epochs.itertuples():
        config = RunConfig(
            "fashion-mnist", "nn2", row.method, seed=0, epochs=1, subset=SUBSET, device="cpu"
        )
        (expected,) = train(config).epochs
        got = (row.lr, row.train_loss, row.train_acc, row.test_loss, row.test_acc)
        assert got == (expected.lr, expected.train_loss, expected.train_acc,
                       expected.test_loss, expected.test_acc), row.method  # fmt: skip
    steps = -(-SUBSET // 128)
    rates = epochs.set_index("method")["lr"]
    assert rates["adamw-3e-4"] == 3e-4
    assert rates["cosine-sgd"] == schedules.get("cosine+", lr_up=0.2)((steps - 1) / steps)


def test_a_user_method_trains_in_worker_processes_without_the_file(
    tmp_path: Path, methods_file_read_once: Path
) -> None:
    epochs = trained_elsewhere(
        tmp_path, methods_file_read_once, "--workers", "2", "--threads", "1", "--batched", "off"
    )
    assert_trained_as_defined(epochs)


def test_a_user_method_trains_on_ray_without_the_file(
    tmp_path: Path, methods_file_read_once: Path
) -> None:
    epochs = trained_elsewhere(
        tmp_path, methods_file_read_once, "--executor", "ray", "--cpus-per-run", "1"
    )
    assert_trained_as_defined(epochs)
