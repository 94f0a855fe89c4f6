"""Readings of what the paper leaves unstated, as run options (issue 15, docs/fidelity.md):
``input_scaling`` (standard or unit) and ``weight_decay_on`` (all or weights)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from annealbench import data
from annealbench.errors import ConfigError
from annealbench.training import RunConfig, train, train_group
from annealbench.training.batched import check_batchable
from annealbench.training.single import SingleStepper


def config(**kw) -> RunConfig:
    kw = {"method": "sig+", "epochs": 1, **kw}
    return RunConfig("fashion-mnist", "nn2", subset=512, device="cpu", **kw)


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


def test_the_readings_change_the_numbers_and_groups_share_a_reading() -> None:
    base = train(config()).epochs[-1]
    unit = train(config(input_scaling="unit")).epochs[-1]
    weights = train(config(weight_decay_on="weights")).epochs[-1]
    assert unit.train_loss != base.train_loss and weights.train_loss != base.train_loss
    mixed = [config(), dataclasses.replace(config(), input_scaling="unit", seed=1)]
    with pytest.raises(ConfigError, match="runs differ in input_scaling"):
        check_batchable(mixed)
    mixed = [config(), dataclasses.replace(config(), weight_decay_on="weights", seed=1)]
    with pytest.raises(ConfigError, match="runs differ in weight_decay_on"):
        check_batchable(mixed)


def test_weights_only_decay_trains_batched_as_alone_and_resumes_in_either_engine(tmp_path):
    """The batched update decays the same tensors as torch's two groups, and a group's
    checkpoint (its optimizer state in torch's order) continues alone, and back."""
    configs = [
        config(weight_decay_on="weights", epochs=2, method=m, seed=s)
        for m, s in (("sig+", 0), ("adam", 1), ("adamw-cosine", 2))
    ]
    grouped = train_group(configs)
    for cfg, result in zip(configs, grouped, strict=True):
        single = train(cfg)
        for a, b in zip(single.epochs, result.epochs, strict=True):
            assert b.lr == a.lr
            assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
            assert b.test_loss == pytest.approx(a.test_loss, rel=1e-5)
    # weight decay on all parameters gives other numbers: the mask is in effect
    everything = train_group([dataclasses.replace(c, weight_decay_on="all") for c in configs])
    assert everything[0].epochs[-1].train_loss != grouped[0].epochs[-1].train_loss

    paths = [tmp_path / f"run{i}.pt" for i in range(len(configs))]

    def stop(index: int, record) -> None:
        if index == len(configs) - 1 and record.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_group(configs, checkpoint_paths=paths, on_epoch=stop)
    for i, cfg in enumerate(configs):
        continued = train(cfg, checkpoint_path=paths[i])
        assert continued.epochs[-1].test_loss == pytest.approx(
            grouped[i].epochs[-1].test_loss, rel=1e-5
        )


@pytest.mark.parametrize(
    "field,value,message",
    [("input_scaling", "minmax", "input_scaling must be one of standard, unit"),
     ("weight_decay_on", "biases", "weight_decay_on must be one of all, weights")],
)  # fmt: skip
def test_bad_readings_are_refused(field: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**{field: value}).validate()
