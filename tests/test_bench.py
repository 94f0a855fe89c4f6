"""``annealbench bench``: the figures it prints and how they relate; never how fast they are
(the machine is shared, so timings are measured by the command, not asserted by tests)."""

from __future__ import annotations

import json
import math

import torch
from typer.testing import CliRunner

from annealbench import bench
from annealbench.cli import app
from annealbench.training import RunConfig

runner = CliRunner()


def test_bench_json_prints_every_figure_side_by_side():
    args = ["bench", "--steps", "3", "--repeats", "1", "--batched-k", "2", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(bench.REQUIRED_KEYS) <= set(figures)
    for key in ("engine_samples_per_s", "reference_samples_per_s", "batched_samples_per_s"):
        assert math.isfinite(figures[key]) and figures[key] > 0
    assert figures["peak_gflops"] > 0
    assert (
        figures["speedup"] == figures["engine_samples_per_s"] / figures["reference_samples_per_s"]
    )
    flops = figures["flops_per_sample"]
    assert figures["engine_gflops"] == figures["engine_samples_per_s"] * flops / 1e9
    assert figures["fraction_of_peak"] == figures["engine_gflops"] / figures["peak_gflops"]
    assert figures["batched_gflops"] == figures["batched_samples_per_s"] * flops / 1e9
    assert figures["batched_k"] == 2 and figures["device"] == "cpu"
    assert figures["model"] == "nn2" and figures["dataset"] == "fashion-mnist"
    assert figures["threads"] == torch.get_num_threads()
    assert figures["torch_version"] == torch.__version__
    assert len(figures["rounds"]) == 1


def test_flops_are_counted_from_the_layers():
    flops = bench.count_flops("nn2", "fashion-mnist")
    matmuls = 784 * 300 + 300 * 100 + 100 * 10
    assert flops.forward == 2 * matmuls
    assert flops.train == 3 * flops.forward
    # backward: weight gradients of every layer, input gradients of all but the first
    assert flops.backward == 2 * matmuls + 2 * (300 * 100 + 100 * 10)


def test_a_step_count_becomes_whole_epochs_of_the_engine():
    cfg = RunConfig("fashion-mnist", "nn2", "sig+", device="cpu")
    short, epochs = bench._one_epoch_config(cfg, 3)
    assert (short.subset, short.epochs, epochs) == (3 * 128, 1, 1)
    long, epochs = bench._one_epoch_config(cfg, 1000)  # 469 steps per epoch
    assert (long.subset, epochs) == (None, 3)


def test_batched_configs_cycle_through_the_papers_methods_then_seeds():
    cfg = RunConfig("fashion-mnist", "nn2", "sig+", device="cpu")
    group = bench.batched_configs(cfg, 14)
    assert [c.method for c in group[:3]] == ["0.1", "0.01", "0.001"]
    assert [(c.method, c.seed) for c in group[12:]] == [("0.1", 1), ("0.01", 1)]


def test_bad_options_are_refused_with_a_message():
    result = runner.invoke(app, ["bench", "--steps", "0"])
    assert result.exit_code == 2 and "--steps" in result.output
    result = runner.invoke(
        app, ["bench", "--model", "vgg19", "--dataset", "cifar10", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 2 and "BatchNorm" in result.output
