"""The schedules library: the paper's curves at known points, properties, composition, errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from annealbench import schedules
from annealbench.schedules import ScheduleError

progress = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
UP, LOW = 0.1, 0.001


def sigmoid(p: float, up: float = UP, low: float = LOW, kappa: float = 0.2) -> float:
    return low + (up - low) / (1 + math.exp((2 * p - 1) / kappa))


def test_schedules_import_without_torch():
    code = (
        "import sys, annealbench.schedules as s; s.get('sig+')(0.5); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_names_lists_paper_then_modern():
    names = schedules.names()
    assert names[:10] == [
        "0.1",
        "0.01",
        "0.001",
        "exp",
        "str",
        "sig",
        "rep",
        "trap",
        "str+",
        "sig+",
    ]
    for modern in ("cosine", "cosine+", "linear", "poly", "onecycle", "wsd", "invsqrt", "sgdr"):
        assert modern in names
    assert schedules.names(paper_only=True) == names[:10]
    assert all(schedules.describe(n) for n in names)


@pytest.mark.parametrize("name,lr", [("0.1", 0.1), ("0.01", 0.01), ("0.001", 0.001)])
@given(p=progress)
def test_constants(name, lr, p):
    assert schedules.get(name)(p) == lr


@pytest.mark.parametrize(
    "name,p,expected",
    [
        ("exp", 0.0, 0.1),
        ("exp", 0.5, 0.01),
        ("exp", 1.0, 0.001),
        ("str", 0.0, 0.1),
        ("str", 1 / 3 - 1e-9, 0.1),
        ("str", 1 / 3, 0.01),
        ("str", 2 / 3 - 1e-9, 0.01),
        ("str", 2 / 3, 0.001),
        ("str", 1.0, 0.001),
        ("sig", 0.0, sigmoid(0.0)),
        ("sig", 0.5, (UP + LOW) / 2),
        ("sig", 1.0, sigmoid(1.0)),
        ("rep", 0.25, (UP + LOW) / 2),  # the middle of the first sigmoid
        ("rep", 0.5, sigmoid(0.0)),  # restarts at half of training
        ("rep", 0.75, (UP + LOW) / 2),
        ("rep", 1.0, sigmoid(1.0)),
        ("trap", 0.0, 0.01),  # warmup starts at 0.01
        ("trap", 0.05, 0.055),  # halfway up the ramp
        ("trap", 0.1, 0.1),
        ("trap", 0.5, 0.1),
        ("trap", 0.9, 0.1),
        ("trap", 0.95, (UP + LOW) / 2),  # halfway down the final linear decay
        ("trap", 1.0, 0.001),
        ("str+", 0.0, 0.01),
        ("str+", 0.1, 0.1),
        ("str+", 0.1 + 0.9 / 3, 0.01),
        ("str+", 0.1 + 0.9 * 2 / 3, 0.001),
        ("sig+", 0.0, 0.01),
        ("sig+", 0.1, sigmoid(0.0)),  # the ramp arrives where the sigmoid starts
        ("sig+", 0.55, (UP + LOW) / 2),  # q = 0.5 in the stretched sigmoid
        ("sig+", 1.0, sigmoid(1.0)),
    ],
)
def test_paper_schedules_at_known_points(name, p, expected):
    assert schedules.get(name)(p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_sigmoid_uses_the_slope_the_figure_shows():
    """kappa divides (2p - 1): the rate sweeps from near lr_up to near lr_low."""
    sig = schedules.get("sig")
    assert sig(0.0) > 0.099 and sig(1.0) < 0.002
    # the literal printed form exp(kappa*(2t-1)) would stay between 0.045 and 0.055
    assert sig(0.0) - sig(1.0) > 0.09


@given(p=progress)
def test_sig_plus_is_stretched_sig(p):
    # The paper's text: a linear ramp from 0.01 to eta_up = 0.1 over the first 10%.
    ramp = 0.01 + (0.1 - 0.01) * p / 0.1
    expected = ramp if p < 0.1 else sigmoid(min((p - 0.1) / 0.9, 1.0))
    assert schedules.get("sig+")(p) == pytest.approx(expected, rel=1e-9)
    # The jump-free variant ramps to sig's own first rate (0.0993) instead.
    if p < 0.1:
        continuous = 0.01 + (sigmoid(0.0) - 0.01) * p / 0.1
        assert schedules.get("sig+", warmup_to="start")(p) == pytest.approx(continuous, rel=1e-9)


def test_warmups_and_floors_follow_the_peak():
    cosine = schedules.get("cosine+", lr_up=1e-3, lr_low=1e-5)
    assert cosine(0.0) == pytest.approx(1e-4) and cosine(0.1) == pytest.approx(1e-3)
    assert cosine(1.0) == pytest.approx(1e-5)
    assert all(np.diff(cosine(np.linspace(0, 0.1, 11))) > 0)  # a warmup rises
    floor = schedules.get("cosine+", lr_up=1e-3)
    assert floor(1.0) == pytest.approx(1e-5)  # lr_low defaults to a hundredth of lr_up
    assert schedules.get("exp", lr_up=0.5)(1.0) == pytest.approx(0.005)
    assert schedules.get("str", lr_up=0.2)(0.9) == pytest.approx(0.002)
    assert schedules.get("trap", lr_up=2.0)(0.0) == pytest.approx(0.2)
    # The paper's defaults come out exactly as printed.
    assert schedules.get("str+")(0.0) == 0.01 and schedules.get("exp")(1.0) == 0.001


@pytest.mark.parametrize(
    ("name", "settings", "match"),
    [
        ("cosine+", {"lr_up": 1e-3, "warmup_lr": 0.01}, "above the rate it warms up to"),
        ("trap", {"warmup_lr": 0.5}, "above the rate it warms up to"),
        ("sig+", {"warmup_start": 1.5}, "warmup start"),
        ("sig+", {"warmup_to": "top"}, "warmup_to must be 'peak' or 'start'"),
        ("cosine", {"lr_up": 1e-3, "lr_low": 0.01}, "lr_low .* is above lr_up"),
    ],
)
def test_impossible_warmups_and_floors_are_refused(name, settings, match):
    with pytest.raises(ScheduleError, match=match):
        schedules.get(name, **settings)


@pytest.mark.parametrize("name", ["exp", "str", "sig", "cosine", "linear", "poly"])
@given(a=progress, b=progress)
def test_decays_are_monotone_and_bounded(name, a, b):
    s = schedules.get(name)
    lo, hi = min(a, b), max(a, b)
    assert s(lo) >= s(hi)
    assert LOW - 1e-12 <= s(a) <= UP + 1e-12


@pytest.mark.parametrize("name", ["trap", "str+", "sig+", "rep", "cosine+", "wsd", "sgdr"])
@given(p=progress)
def test_bounds_after_warmup(name, p):
    s = schedules.get(name)
    if p >= 0.1:
        assert LOW - 1e-12 <= s(p) <= UP + 1e-12


@pytest.mark.parametrize("name", ["trap", "str+", "sig+", "cosine+", "wsd", "linear+"])
@given(a=progress, b=progress)
def test_warmup_rises_then_decays(name, a, b):
    s = schedules.get(name)
    lo, hi = min(a, b), max(a, b)
    if hi <= 0.1 - 1e-12:
        assert s(lo) <= s(hi)
    if lo >= 0.1:
        assert s(lo) >= s(hi)


def test_arrays_in_arrays_out():
    p = np.linspace(0, 1, 101)
    for name in schedules.names():
        values = schedules.get(name)(p)
        assert isinstance(values, np.ndarray) and values.shape == p.shape
        scalars = np.array([schedules.get(name)(float(x)) for x in p])
        np.testing.assert_array_equal(values, scalars)
    assert isinstance(schedules.get("sig")(0.3), float)


def test_warmup_composes_with_any_schedule():
    base = schedules.Cosine(0.2, 0.0)
    s = schedules.warmup(base, fraction=0.25, lr_start=0.0)
    assert s(0.0) == 0.0
    assert s(0.125) == pytest.approx(0.1)
    assert s(0.25) == pytest.approx(0.2)
    assert s(1.0) == pytest.approx(0.0)
    assert schedules.warmup(base, fraction=0.0) is base


def test_sequence_joins_schedules_in_time():
    s = schedules.Sequence(
        (schedules.Constant(0.1), schedules.Linear(0.1, 0.0), schedules.Constant(0.05)),
        (0.5, 0.75),
    )
    assert s(0.25) == 0.1
    assert s(0.625) == pytest.approx(0.05)
    assert s(0.75) == 0.05 and s(1.0) == 0.05


def test_sgdr_periods_double():
    s = schedules.get("sgdr")  # cycles of 1/7, 2/7, 4/7
    for start in (0.0, 1 / 7, 3 / 7):
        assert s(start) == pytest.approx(UP)
    assert s(1 / 7 - 1e-12) == pytest.approx(LOW, abs=1e-9)
    assert s(1.0) == pytest.approx(LOW)


def test_onecycle_matches_smiths_shape():
    s = schedules.get("onecycle", lr_up=0.4)
    assert s(0.0) == pytest.approx(0.4 / 25)
    assert s(0.3) == pytest.approx(0.4)
    assert s(1.0) == pytest.approx(0.4 / 25 / 1e4)


def test_overrides_change_the_curve():
    s = schedules.get("str", levels=(1.0, 0.5), milestones=(0.5,))
    assert s(0.49) == 1.0 and s(0.5) == 0.5
    assert schedules.get("trap", decay_fraction=0.5)(0.75) == pytest.approx((UP + LOW) / 2)
    assert schedules.get("sig+", kappa=0.1, lr_up=0.2)(0.55) == pytest.approx((0.2 + 0.002) / 2)


def test_config_round_trip_rebuilds_equal_schedules():
    for name in schedules.names():
        s = schedules.get(name)
        again = schedules.from_config(s.to_config())
        assert again == s
        p = np.linspace(0, 1, 33)
        np.testing.assert_array_equal(again(p), s(p))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: schedules.get("cosin"), "valid names: 0.1, 0.01"),
        (lambda: schedules.get("sig", lr_up=0.001, lr_low=0.1), "lr_low .* above lr_up"),
        (lambda: schedules.get("exp", lr_up=-0.1), "lr_up must be > 0"),
        (lambda: schedules.get("exp", lr_up=0.0), "lr_up must be > 0"),
        (lambda: schedules.get("exp", lr_low=float("inf")), "must be finite"),
        (lambda: schedules.get("cosine", lr_up=float("nan")), "must be finite"),
        (lambda: schedules.get("0.1", lr=-1.0), "lr must be > 0"),
        (lambda: schedules.get("sig+", warmup_fraction=1.0), r"lie in \[0, 1\)"),
        (lambda: schedules.get("sig+", warmup_fraction=-0.1), r"lie in \[0, 1\)"),
        (lambda: schedules.get("trap", warmup_fraction=0.6, decay_fraction=0.6), "exceed 1"),
        (lambda: schedules.get("sig", warmup=0.1), "takes no setting warmup"),
        (lambda: schedules.get("sig")(1.5), r"must lie in \[0, 1\]"),
        (lambda: schedules.get("sig")(-0.01), r"must lie in \[0, 1\]"),
        (lambda: schedules.get("sig")(float("nan")), "NaN"),
        (lambda: schedules.get("exp")(np.array([0.1, 2.0])), r"must lie in \[0, 1\]"),
        (lambda: schedules.get("str", milestones=(0.6, 0.3)), "increase strictly"),
        (lambda: schedules.get("str", levels=(0.1,)), "one more level"),
        (lambda: schedules.Repeat(schedules.Constant(0.1), cycles=0), "cycles must be"),
    ],
)
def test_bad_input_raises_a_clear_error(call, match):
    with pytest.raises(ScheduleError, match=match):
        call()
