"""Batched runs: a run trained in a group equals the same run trained alone, the stacked
optimizer updates equal torch.optim's, one run's divergence leaves the others alone,
checkpoints interchange with the engine's, and the automatic choice refuses what it must.
Real Fashion-MNIST, 512 training images, the full test set."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from annealbench import methods, training
from annealbench.errors import ConfigError
from annealbench.training import RunConfig, batched
from annealbench.training import train_group as train_batched
from annealbench.training.batched import batched_update, optimizer_rule
from annealbench.training.loop import start
from annealbench.training.parts import initial_model

SUBSET = 512
# Batched matmuls round differently from one run's: equal up to float32 rounding.
LOSS_RTOL = 1e-5


def config(**overrides) -> RunConfig:
    base = dict(dataset="fashion-mnist", model="nn2", method="sig+", seed=0, epochs=2)
    base.update(subset=SUBSET, device="cpu")
    base.update(overrides)
    return RunConfig(**base)


def group_of(model: str) -> tuple[RunConfig, ...]:
    """Three runs: two SGD schedules and one adaptive method, three seeds."""
    return (
        config(model=model, method="sig+", seed=0),
        config(model=model, method="adam", seed=1),
        config(model=model, method="0.1", seed=2, step_per="epoch"),
    )


@functools.cache
def alone(cfg: RunConfig) -> training.RunResult:
    """A run trained by itself in the engine (once per test session)."""
    return training.train(cfg)


@functools.cache
def together(configs: tuple[RunConfig, ...]) -> tuple[training.RunResult, ...]:
    """The runs trained as one group (once per test session)."""
    return tuple(train_batched(list(configs)))


def assert_same_run(alone: training.RunResult, together: training.RunResult) -> None:
    assert together.config == alone.config
    assert together.status == alone.status
    assert len(together.epochs) == len(alone.epochs)
    for a, b in zip(alone.epochs, together.epochs, strict=True):
        assert b.epoch == a.epoch
        assert b.lr == a.lr  # the same AnnealingLR step, exactly
        for name in ("train_loss", "test_loss"):
            x, y = getattr(a, name), getattr(b, name)
            assert (math.isnan(x) and math.isnan(y)) or y == pytest.approx(x, rel=LOSS_RTOL)
        # at most one sample may land on the other side of a tie
        assert abs(b.train_acc - a.train_acc) <= 100 / SUBSET + 1e-9
        assert abs(b.test_acc - a.test_acc) <= 100 / 10_000 + 1e-9


@pytest.mark.parametrize("model", ["nn2", "lenet4"])
def test_batched_runs_equal_the_same_runs_trained_alone(model):
    configs = group_of(model)
    results = together(configs)
    for cfg, result in zip(configs, results, strict=True):
        assert result.status == "done"
        assert_same_run(alone(cfg), result)


def test_one_diverging_run_stops_and_the_others_carry_on_to_their_own_ends():
    methods.register(methods.Method("boom-batched", "sgd", lr=1e4), replace=True)
    configs = [
        config(method="str", epochs=1),
        config(method="boom-batched", seed=1, epochs=2),
        config(method="rms", seed=1, epochs=2),
    ]
    seen: list[tuple[int, int]] = []
    results = train_batched(configs, on_epoch=lambda i, r: seen.append((i, r.epoch)))
    assert [r.status for r in results] == ["done", "diverged", "done"]
    assert [len(r.epochs) for r in results] == [1, 1, 2]
    assert sorted(seen) == [(0, 1), (1, 1), (2, 1), (2, 2)]
    assert "non-finite" in results[1].error
    assert math.isnan(results[1].epochs[0].train_loss)
    for cfg, result in zip(configs, results, strict=True):
        assert_same_run(alone(cfg), result)


class Interrupt(Exception):
    pass


def test_a_group_resumes_from_its_checkpoints_batched_or_one_at_a_time(tmp_path):
    configs = list(group_of("nn2"))
    paths = [tmp_path / f"run{i}.pt" for i in range(len(configs))]
    uninterrupted = together(group_of("nn2"))

    def stop_after_first_epoch(index: int, record: training.EpochRecord) -> None:
        if index == 2 and record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_batched(configs, checkpoint_paths=paths, on_epoch=stop_after_first_epoch)
    assert all(p.exists() for p in paths)
    # Run 0 continues alone in the engine from the group's checkpoint (same file format).
    continued = training.train(configs[0], checkpoint_path=paths[0])
    assert_same_run(uninterrupted[0], continued)
    # Run 2 starts over: the group trains it up to the others, then all continue together.
    paths[2].unlink()
    resumed = train_batched(configs, checkpoint_paths=paths)
    assert [len(r.epochs) for r in resumed] == [2, 2, 2]
    for before, after in zip(uninterrupted, resumed, strict=True):
        assert_same_run(before, after)
    # Run 1 resumed together with a fresh run 2, from the same checkpoint: bit for bit.
    assert resumed[1].epochs[1].test_loss == uninterrupted[1].epochs[1].test_loss


# --------------------------------------------------------------------------- optimizer updates

OPTIMIZERS = {
    "sgd": lambda ps: methods.get("sig+").make_optimizer(ps),
    "rmsprop": lambda ps: methods.get("rms").make_optimizer(ps),
    "adam": lambda ps: methods.get("adam").make_optimizer(ps),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1.0, weight_decay=0.05),
    "sgd-no-momentum": lambda ps: torch.optim.SGD(ps, lr=1.0, weight_decay=1e-3),
}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_batched_updates_equal_torch_optim_on_the_same_gradients(kind):
    torch.manual_seed(0)
    runs, shapes, steps = 3, [(5, 4), (4,)], 6
    singles = [[torch.randn(s, requires_grad=True) for s in shapes] for _ in range(runs)]
    optimizers = [OPTIMIZERS[kind](ps) for ps in singles]
    rule = optimizer_rule(optimizers[0])
    stacked = [torch.stack([ps[i].detach() for ps in singles]) for i in range(len(shapes))]
    state: dict = {}
    for step in range(steps):
        grads = [torch.randn(runs, *s) for s in shapes]
        lrs = [0.1 / (1 + step + run) for run in range(runs)]  # a different rate per run
        for run, (ps, opt) in enumerate(zip(singles, optimizers, strict=True)):
            opt.param_groups[0]["lr"] = lrs[run]
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[run].clone()
            opt.step()
        batched_update(rule, stacked, [g.clone() for g in grads], state, lrs)
        for i in range(len(shapes)):
            expected = torch.stack([ps[i].detach() for ps in singles])
            torch.testing.assert_close(stacked[i], expected, rtol=1e-6, atol=1e-7)
    assert state["step"] == steps


def test_unsupported_optimizer_settings_are_refused():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ConfigError, match="nesterov"):
        optimizer_rule(torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    with pytest.raises(ConfigError, match="centered"):
        optimizer_rule(torch.optim.RMSprop(p, centered=True))
    with pytest.raises(ConfigError, match="Adagrad"):
        optimizer_rule(torch.optim.Adagrad(p))


# --------------------------------------------------------------------------- the choice


def test_batchnorm_models_and_mixed_groups_are_refused():
    bn = [
        RunConfig("cifar10", "resnet18", "sig+", seed=s, device="cpu", subset=256) for s in range(8)
    ]
    assert not batched.should_batch(bn)
    with pytest.raises(ConfigError, match="BatchNorm"):
        batched.check_batchable(bn)
    mixed = [config(model="nn2"), config(model="nn3")]
    assert not batched.should_batch(mixed)
    with pytest.raises(ConfigError, match="differ in model"):
        train_batched(mixed)
    with pytest.raises(ConfigError, match="bf16"):
        batched.check_batchable([config(bf16=True), config()])


def test_the_automatic_choice_follows_the_cpu_measurements():
    row = [config(method=m, seed=s) for m in methods.PAPER_METHODS for s in range(2)]
    assert batched.should_batch(row, "cpu")  # MLP, many runs: batched measured faster
    assert not batched.should_batch(row[: batched.MIN_RUNS_CPU - 1], "cpu")
    assert not batched.should_batch([config()], "cpu")
    for model in ("nn3", "lenet4"):  # measured slower (or no faster) on this CPU
        others = [config(model=model, method=m) for m in methods.PAPER_METHODS]
        assert not batched.should_batch(others, "cpu")


def test_the_group_stacks_the_engines_initial_weights():
    group = start(list(group_of("nn2")), batched=True)
    spec = group.data.spec
    for row, run in enumerate(group.active):
        fresh = initial_model(run.config, spec.input_shape, spec.num_classes, group.device)
        for name, param in fresh.named_parameters():
            assert torch.equal(group.stepper.params[name][row], param.detach())
