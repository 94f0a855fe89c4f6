"""The learning-rate range test: its arithmetic, a tiny real sweep, and ``annealbench lr-find``."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from annealbench import lr_find
from annealbench.cli import app
from annealbench.errors import UsageError
from annealbench.training import RunConfig

runner = CliRunner()
TINY = ["--dataset", "fashion-mnist", "--model", "nn2", "--subset", "512", "--device", "cpu"]


# -- the arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize("low,high,steps", [(1e-5, 10.0, 200), (1e-3, 1.0, 10), (0.5, 0.7, 37)])
def test_rates_are_geometric_from_min_to_max(low, high, steps):
    rates = lr_find.sweep_rates(low, high, steps)
    assert len(rates) == steps
    assert rates[0] == low and rates[-1] == high
    ratio = (high / low) ** (1 / (steps - 1))
    np.testing.assert_allclose(rates[1:] / rates[:-1], ratio, rtol=1e-12)
    np.testing.assert_allclose(np.log(rates), np.linspace(np.log(low), np.log(high), steps))


def test_smoothing_is_a_bias_corrected_moving_average():
    assert list(lr_find.smooth([2.0, 2.0, 2.0])) == pytest.approx([2.0, 2.0, 2.0])
    out = lr_find.smooth([1.0, 3.0], beta=0.5)
    assert out[0] == 1.0  # the first value is the first loss, not (1 - beta) of it
    assert out[1] == pytest.approx((0.5 * 0.5 * 1 + 0.5 * 3) / (1 - 0.25))


def test_a_sweep_stops_where_the_smoothed_loss_passes_four_times_its_minimum():
    falling = list(np.linspace(2.0, 1.0, 20))
    assert lr_find.stop_index(falling) is None
    rising = falling + [1.0 * 3**i for i in range(1, 30)]
    stop = lr_find.stop_index(rising)
    smoothed = lr_find.smooth(rising)
    assert stop is not None and 20 < stop < len(rising)
    assert smoothed[stop] > 4 * smoothed[:stop].min() >= smoothed[stop - 1]
    assert lr_find.stop_index([2.0, 1.9, math.nan, 1.0]) == 2  # a non-finite loss stops it


def test_the_rules_find_the_steepest_descent_and_the_minimum():
    rates = lr_find.sweep_rates(1e-4, 10.0, 101)
    # A fall centred on 1e-2 (steepest there), lowest at 1, rising beyond.
    loss = 2 - np.tanh(2 * (np.log10(rates) + 2)) + np.maximum(0, np.log10(rates)) ** 2
    steep = lr_find.suggest(rates, loss, "steepest")
    assert steep == pytest.approx(1e-2, rel=0.15)
    lowest = rates[int(np.argmin(loss))]
    assert lr_find.suggest(rates, loss, "minimum") == pytest.approx(lowest / 10)
    assert lr_find.suggest(rates, np.full(101, np.nan), "steepest") is None
    rising = np.linspace(2.0, 9.0, 101)  # diverges from the first update: no suggestion
    assert lr_find.suggest(rates, rising, "steepest") is lr_find.suggest(rates, rising, "minimum")
    assert lr_find.suggest(rates, rising, "minimum") is None
    with pytest.raises(UsageError, match="unknown rule 'valley'"):
        lr_find.suggest(rates, loss, "valley")


def test_hints_give_tune_scales_and_a_methods_table():
    rates = lr_find.sweep_rates(1e-4, 1.0, 50)
    loss = 2 - np.tanh(np.log10(rates) + 2)
    sweep = lr_find.SeedSweep(0, rates, loss, lr_find.smooth(loss), 50)
    for method, peak, line in [("sig+", 0.1, "lr_up = "), ("adam", 1e-3, "lr = ")]:
        config = RunConfig("fashion-mnist", "nn2", method)
        result = lr_find.combine(config, rates, [sweep], "steepest", peak)
        text = "\n".join(lr_find.hints(result))
        scale = result.rounded / peak
        assert f"--tune-scales {float(f'{scale / 2:.2g}'):g},{float(f'{scale:.2g}'):g}," in text
        assert f"{line}{result.rounded:g}" in text


# -- a real sweep -------------------------------------------------------------------------------

CONFIG = RunConfig("fashion-mnist", "nn2", "sig+", subset=512, device="cpu")


@pytest.fixture(scope="module")
def tiny() -> lr_find.LrFindResult:
    """fashion-mnist's first 512 images, nn2, 2 seeds x 60 updates from 1e-5 to 10."""
    return lr_find.lr_find(CONFIG, seeds=2, steps=60)


def test_a_tiny_sweep_suggests_a_rate_inside_the_range(tiny):
    assert tiny.rule == "steepest" and len(tiny.sweeps) == 2
    assert 1e-5 <= tiny.suggestion <= 10.0
    assert all(s is not None and 1e-5 <= s <= 10.0 for s in tiny.per_seed)
    assert tiny.method_peak == 0.1  # sig+'s peak
    median = tiny.median[: tiny.common]
    lowest = int(np.argmin(median))
    assert lowest > 0 and median[lowest] < median[0] - 0.1  # the loss first decreases
    assert tiny.rates[0] < tiny.suggestion <= tiny.rates[lowest]  # ... on the way down


def test_a_diverging_seed_stops_early(tiny):
    for sweep in tiny.sweeps:  # 10 is far too high a rate for SGD on nn2
        assert sweep.stopped_early and len(sweep.losses) < 60
        assert lr_find.stop_index(sweep.losses) == len(sweep.losses) - 1
        assert list(sweep.rates) == list(tiny.rates[: len(sweep.losses)])


def test_a_sweep_is_deterministic_per_seed(tiny):
    from annealbench.training.loop import load_data
    from annealbench.training.parts import resolve_device

    device = resolve_device("cpu")
    data = load_data(CONFIG, None, device)
    again = lr_find.run_seed(dataclasses.replace(CONFIG, seed=1), tiny.rates, data, device)
    assert np.array_equal(again.losses, tiny.sweeps[1].losses)
    assert not np.array_equal(tiny.sweeps[0].losses[:10], tiny.sweeps[1].losses[:10])


# -- the command --------------------------------------------------------------------------------


def test_the_command_writes_the_plot_and_the_csv_and_names_its_rule(tmp_path):
    plot, table = tmp_path / "out" / "lr.png", tmp_path / "lr.csv"
    args = ["lr-find", *TINY, "--steps", "30", "--seeds", "2", "--plot", str(plot)]
    result = runner.invoke(app, [*args, "--csv", str(table), "--rule", "minimum"])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    rows = list(csv.DictReader(table.open()))
    assert rows[0] == {**rows[0], "seed": "0", "step": "0", "lr": "1e-05"}
    assert {r["seed"] for r in rows} == {"0", "1", "median", "min", "max"}
    assert "rule: minimum: rate of the median smoothed loss's minimum / 10" in result.output
    assert "per seed: seed 0: " in result.output and "seed 1: " in result.output
    assert "suggested peak rate: " in result.output
    assert "as a scale of sig+'s peak 0.1: --tune-scales " in result.output
    assert "schedule_settings = { lr_up = " in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["--min-lr", "1", "--max-lr", "0.1"], "--min-lr (1) must be below --max-lr (0.1)"),
        (["--min-lr", "0"], "--min-lr must be a positive finite rate, got 0"),
        (["--max-lr", "-3"], "--max-lr must be a positive finite rate"),
        (["--steps", "9"], "--steps must be an integer >= 10, got 9"),
        (["--rule", "valley"], "--rule must be one of steepest, minimum"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--plot", "lr.svg"], "--plot needs a .png or .pdf"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--method", "bogus"], "unknown method 'bogus'"),
    ],
)
def test_bad_input_is_one_clear_error(args, message):
    result = runner.invoke(app, ["lr-find", *TINY, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
