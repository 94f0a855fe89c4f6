"""One run: every method trains, runs are deterministic and paired, resume is exact,
divergence is recorded, and bad input is refused. Real Fashion-MNIST, small subsets."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from annealbench import methods, training
from annealbench.errors import CheckpointError, ConfigError
from annealbench.training import RunConfig, train
from annealbench.training.loop import start

SUBSET = 512


def config(**overrides) -> RunConfig:
    base = dict(dataset="fashion-mnist", model="nn2", method="sig+", seed=0, epochs=2)
    base.update(subset=SUBSET, device="cpu")
    base.update(overrides)
    return RunConfig(**base)


def numbers(result: training.RunResult) -> list[tuple]:
    """Everything a run measured except wall time."""
    return [
        (r.epoch, r.lr, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in result.epochs
    ]


@pytest.mark.parametrize("method", methods.PAPER_METHODS)
def test_every_paper_method_trains_one_epoch(method):
    result = train(config(method=method, epochs=1))
    assert result.status == "done"
    (record,) = result.epochs
    assert record.epoch == 1
    assert 0 < record.train_loss < 10 and 0 <= record.test_acc <= 100
    spec = methods.get(method)
    steps = -(-SUBSET // 128)
    expected_lr = spec.schedule_for("nn2")((steps - 1) / steps)  # rate of the last step
    assert record.lr == pytest.approx(expected_lr)


def test_adaptive_methods_use_the_papers_rates_for_shallow_and_deep_models():
    assert methods.get("adam").schedule_for("nn2")(0.5) == 1e-3
    assert methods.get("rms").schedule_for("resnet18")(0.5) == 1e-4
    opt = methods.get("sig+").make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 5e-4


def test_cpu_runs_are_bit_for_bit_deterministic():
    a, b = train(config()), train(config())
    assert numbers(a) == numbers(b)


def test_runs_with_one_seed_are_paired_across_methods():
    one, two, other = (
        start([config(method=m, seed=s)], batched=False)
        for m, s in (("exp", 0), ("adam", 0), ("exp", 1))
    )
    first = [t.stepper.model for t in (one, two, other)]  # type: ignore[attr-defined]
    for p, q in zip(first[0].parameters(), first[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(next(first[0].parameters()), next(first[2].parameters()))
    n = one.data.train_x.shape[0]
    gen_one, gen_two = one.active[0].order_gen, two.active[0].order_gen
    assert torch.equal(torch.randperm(n, generator=gen_one), torch.randperm(n, generator=gen_two))


def test_per_epoch_stepping_holds_the_rate_through_an_epoch():
    result = train(config(method="exp", epochs=3, step_per="epoch"))
    rates = [r.lr for r in result.epochs]
    assert rates == pytest.approx([0.1, 0.1 * 0.01 ** (1 / 3), 0.1 * 0.01 ** (2 / 3)])


def test_resume_after_an_interruption_gives_the_uninterrupted_numbers(tmp_path):
    full = train(config(epochs=4, method="str+"))
    ckpt = tmp_path / "run.pt"

    class Interrupted(Exception):
        pass

    def stop_after_two(record):
        if record.epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config(epochs=4, method="str+"), checkpoint_path=ckpt, on_epoch=stop_after_two)
    seen = []
    resumed = train(config(epochs=4, method="str+"), checkpoint_path=ckpt, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [3, 4]  # only new epochs are reported
    assert numbers(resumed) == numbers(full)
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 4


def test_resume_after_sigkill_of_the_cli(tmp_path):
    ckpt = tmp_path / "killed.pt"
    args = [sys.executable, "-m", "annealbench.cli", "train", "--dataset", "fashion-mnist"]
    args += ["--model", "nn2", "--method", "sig", "--epochs", "6", "--subset", "2048"]
    args += ["--device", "cpu", "--checkpoint", str(ckpt)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never wrote a checkpoint"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "killed.pt"]
    assert leftovers == [] or all(p.name.endswith(".tmp") for p in leftovers)
    saved_epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 6
    cfg = config(method="sig", epochs=6, subset=2048)
    resumed = train(cfg, checkpoint_path=ckpt)
    assert numbers(resumed) == numbers(train(cfg))


def test_divergence_is_recorded_not_raised(tmp_path):
    methods.register(methods.Method("boom", "sgd", lr=1e4), replace=True)
    ckpt = tmp_path / "boom.pt"
    result = train(config(method="boom", epochs=3), checkpoint_path=ckpt)
    assert result.status == "diverged"
    assert "non-finite" in result.error
    assert len(result.epochs) == 1
    # resuming a diverged run reports it again without training
    again = train(config(method="boom", epochs=3), checkpoint_path=ckpt)
    assert again.status == "diverged" and len(again.epochs) == 1


def test_custom_methods_travel_inside_the_config():
    methods.register(methods.Method("cos-sgd", "sgd", "cosine+", {"lr_up": 0.05}), replace=True)
    cfg = config(method="cos-sgd", epochs=1)
    assert cfg.custom_method["schedule"] == "cosine+"
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.key() == cfg.key()
    assert train(cfg).status == "done"


def test_keys_are_stable_and_ignore_the_device():
    a = config()
    assert a.key() == dataclasses.replace(a, device="auto").key()
    assert a.key() != dataclasses.replace(a, seed=1).key()
    assert len({a, dataclasses.replace(a, device="auto")}) == 2


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            {"dataset": "imagenet"},
            "unknown dataset 'imagenet'; valid datasets: mnist, fashion-mnist",
        ),
        ({"model": "vit"}, "unknown model 'vit'; valid models: nn2"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"subset": 0}, "subset must be"),
        ({"step_per": "batch"}, "step_per must be"),
        ({"model": "vgg19"}, "does not fit fashion-mnist"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
    ],
)
def test_bad_configs_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        train(config(**overrides))


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_trains_where_there_is_a_gpu_and_is_refused_where_there_is_none(device):
    """A run on CUDA is a valid run anywhere (the device is not part of what it is); where
    it trains, it needs a GPU: here it trains one epoch, or is refused with the reason."""
    run = config(device=device, epochs=1)
    run.validate()
    assert run.key() == config(epochs=1).key()
    if torch.cuda.is_available():
        result = train(run)
        assert result.status == "done" and len(result.epochs) == 1
        assert 0 < result.epochs[0].train_loss < 10 and result.epochs[0].test_acc > 10
    else:
        with pytest.raises(ConfigError, match=f"device '{device}' asked for, .* no CUDA GPU"):
            train(run)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'sgd\+'; valid methods: 0.1, 0.01"):
        config(method="sgd+")


def test_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "a.pt"
    train(config(epochs=1), checkpoint_path=ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="seed: checkpoint 0 vs run 1"):
        train(config(epochs=1, seed=1), checkpoint_path=ckpt)
    assert ckpt.read_bytes() == before


def test_corrupt_checkpoint_is_named(tmp_path):
    ckpt = tmp_path / "bad.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(ckpt)):
        train(config(epochs=1), checkpoint_path=ckpt)


def test_full_fashion_mnist_learns(tmp_path):
    """Two epochs of nn2 on all 60,000 real images already beat 84% test accuracy."""
    result = train(config(subset=None, epochs=2))
    assert result.epochs[-1].test_acc > 84.0


def test_train_command_prints_the_table(tmp_path):
    from typer.testing import CliRunner

    from annealbench.cli import app

    out = CliRunner().invoke(
        app,
        ["train", "--dataset", "fashion-mnist", "--model", "nn2", "--method", "exp"]
        + ["--epochs", "1", "--subset", "256", "--device", "cpu"],
    )
    assert out.exit_code == 0, out.output
    assert "test acc %" in out.output and "fashion-mnist/nn2/exp/seed0" in out.output
    bad = CliRunner().invoke(app, ["train", "--dataset", "x", "--model", "nn2", "--method", "exp"])
    assert bad.exit_code == 2 and "unknown dataset 'x'" in bad.output
