"""Readings of what the paper leaves unstated, as run options (issue 15, docs/fidelity.md):
``input_scaling`` (standard or unit) and ``weight_decay_on`` (all or weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from annealbench import data
from annealbench.errors import ConfigError
from annealbench.training import RunConfig, train
from annealbench.training.batched import check_batchable
from annealbench.training.single import SingleStepper


def config(**kw) -> RunConfig:
    return RunConfig("fashion-mnist", "nn2", "sig+", epochs=1, subset=512, device="cpu", **kw)


def test_defaults_leave_the_run_key_as_it_was() -> None:
    """Stores and checkpoints written before these options keep their runs' keys."""
    plain = config()
    assert "input_scaling" not in plain.identity() and "weight_decay_on" not in plain.identity()
    assert plain.key() == config(input_scaling="standard", weight_decay_on="all").key()
    assert plain.key() != config(input_scaling="unit").key()
    assert plain.key() != config(weight_decay_on="weights").key()


def test_unit_scaling_keeps_inputs_in_zero_one_and_standard_normalizes() -> None:
    unit = data.load("fashion-mnist", subset=512, scaling="unit")
    standard = data.load("fashion-mnist", subset=512)
    assert float(unit.train_x.min()) == 0.0 and float(unit.train_x.max()) == 1.0
    mean, std = standard.spec.mean[0], standard.spec.std[0]
    assert torch.allclose(standard.train_x, (unit.train_x - mean) / std, atol=1e-5)
    with pytest.raises(ConfigError, match="input scaling must be one of standard, unit"):
        data.load("fashion-mnist", subset=512, scaling="minmax")


def test_weight_decay_on_weights_leaves_biases_undecayed() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    stepper = SingleStepper(config(weight_decay_on="weights"), model, torch.device("cpu"))
    decayed, undecayed = stepper.optimizer.param_groups
    assert [p.dim() for p in decayed["params"]] == [2] and decayed["weight_decay"] == 5e-4
    assert [p.dim() for p in undecayed["params"]] == [1] and undecayed["weight_decay"] == 0.0
    (everything,) = SingleStepper(config(), model, torch.device("cpu")).optimizer.param_groups
    assert len(everything["params"]) == 2


def test_the_readings_change_the_numbers_and_batching_refuses_weights_only() -> None:
    base = train(config()).epochs[-1]
    unit = train(config(input_scaling="unit")).epochs[-1]
    weights = train(config(weight_decay_on="weights")).epochs[-1]
    assert unit.train_loss != base.train_loss and weights.train_loss != base.train_loss
    group = [config(weight_decay_on="weights", seed=s) for s in range(2)]
    with pytest.raises(ConfigError, match="decays every parameter"):
        check_batchable(group)
    mixed = [config(), dataclasses.replace(config(), input_scaling="unit", seed=1)]
    with pytest.raises(ConfigError, match="runs differ in input_scaling"):
        check_batchable(mixed)


@pytest.mark.parametrize(
    "field,value,message",
    [("input_scaling", "minmax", "input_scaling must be one of standard, unit"),
     ("weight_decay_on", "biases", "weight_decay_on must be one of all, weights")],
)  # fmt: skip
def test_bad_readings_are_refused(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**{field: value}).validate()
