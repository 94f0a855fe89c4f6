"""AnnealingLR: the closed form, equality with PyTorch's schedulers, exact resume, errors."""

from __future__ import annotations

import io

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    MultiStepLR,
    SequentialLR,
)

from annealbench import AnnealingLR, schedules
from annealbench.schedules import ScheduleError


def make_optimizer(lr: float = 0.1, groups: int = 1) -> torch.optim.SGD:
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def rates(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_rate_after_k_steps_is_the_schedule_at_k_over_total():
    opt = make_optimizer()
    sched = AnnealingLR(opt, "sig+", total_steps=50)
    s = schedules.get("sig+")
    got = rates(sched, opt, 60)
    assert got == [pytest.approx(s(min(k, 50) / 50), rel=0, abs=0) for k in range(60)]
    assert got[-1] == s(1.0)  # past total_steps the final rate holds


@pytest.mark.parametrize("total", [30, 99, 300])
def test_exp_equals_exponential_lr(total):
    opt_a, opt_b = make_optimizer(), make_optimizer()
    ours = rates(AnnealingLR(opt_a, "exp", total), opt_a, total + 1)
    gamma = (0.001 / 0.1) ** (1 / total)
    theirs = rates(ExponentialLR(opt_b, gamma), opt_b, total + 1)
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize("total", [30, 300, 3000])
def test_str_equals_multistep_lr(total):
    opt_a, opt_b = make_optimizer(), make_optimizer()
    ours = rates(AnnealingLR(opt_a, "str", total), opt_a, total)
    theirs = rates(MultiStepLR(opt_b, [total // 3, 2 * total // 3], gamma=0.1), opt_b, total)
    assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("total", [40, 400])
def test_cosine_equals_cosine_annealing_lr(total):
    opt_a, opt_b = make_optimizer(), make_optimizer()
    ours = rates(AnnealingLR(opt_a, "cosine", total), opt_a, total + 1)
    theirs = rates(CosineAnnealingLR(opt_b, T_max=total, eta_min=0.001), opt_b, total + 1)
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize("total", [50, 500])
def test_warmup_ramp_equals_linear_lr_in_sequential_lr(total):
    """str+: the 10% ramp from 0.01 to 0.1 is LinearLR(0.1 -> 1), then MultiStepLR."""
    warm = total // 10
    opt_a, opt_b = make_optimizer(), make_optimizer()
    ours = rates(AnnealingLR(opt_a, "str+", total), opt_a, total)
    body = total - warm
    theirs_sched = SequentialLR(
        opt_b,
        [
            LinearLR(opt_b, start_factor=0.1, end_factor=1.0, total_iters=warm),
            MultiStepLR(opt_b, [body // 3, 2 * body // 3], gamma=0.1),
        ],
        milestones=[warm],
    )
    theirs = rates(theirs_sched, opt_b, total)
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_resume_through_state_dict_gives_the_same_sequence():
    total = 97
    opt = make_optimizer()
    sched = AnnealingLR(opt, "rep", total)
    uninterrupted = rates(sched, opt, total + 3)

    opt1 = make_optimizer()
    first = AnnealingLR(opt1, "rep", total)
    head = rates(first, opt1, 41)
    buffer = io.BytesIO()
    torch.save({"sched": first.state_dict(), "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # plain data only

    opt2 = make_optimizer(lr=123.0)
    second = AnnealingLR(opt2, "rep", total)
    opt2.load_state_dict(saved["opt"])
    second.load_state_dict(saved["sched"])
    tail = rates(second, opt2, total + 3 - 41)
    assert head + tail == uninterrupted  # exact, not approximate


def test_nothing_drifts_when_lr_is_overwritten():
    opt = make_optimizer()
    sched = AnnealingLR(opt, "cosine", 10)
    opt.step()
    sched.step()
    opt.param_groups[0]["lr"] = 42.0  # a chained scheduler or user meddling
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == schedules.get("cosine")(0.2)


def test_per_group_scale_and_schedule_objects():
    opt = make_optimizer(groups=2)
    sched = AnnealingLR(opt, schedules.Constant(0.5), 10, scale=[1.0, 0.1], absolute=True)
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]
    assert sched.get_last_lr() == [0.5, pytest.approx(0.05)]


def test_each_groups_lr_is_the_peak_the_schedule_is_scaled_to():
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 0.01}, {"params": [params[1]]}], lr=0.1)
    sig_plus = schedules.get("sig+")
    sched = AnnealingLR(opt, sig_plus, 100)
    for k in range(100):
        want = sig_plus(k / 100) / sig_plus.peak
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01 * want, 0.1 * want])
        opt.step()
        sched.step()
    adam = torch.optim.Adam([params[2]], lr=3e-4)
    AnnealingLR(adam, "cosine+", 10)
    assert adam.param_groups[0]["lr"] == pytest.approx(3e-5)  # warmup from a tenth of 3e-4
    # The paper's own setting keeps the schedule's rates bit for bit.
    paper = make_optimizer(lr=0.1)
    AnnealingLR(paper, "sig+", 10)
    assert paper.param_groups[0]["lr"] == sig_plus(0.0)


def test_numpy_integers_are_step_counts():
    import numpy as np

    sched = AnnealingLR(make_optimizer(), "exp", np.int64(10))
    assert sched.total_steps == 10 and isinstance(sched.total_steps, int)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"schedule": "sig", "total_steps": 0}, "total_steps must be an integer >= 1"),
        ({"schedule": "sig", "total_steps": 2.5}, "total_steps must be an integer >= 1"),
        ({"schedule": "nope", "total_steps": 10}, "valid names"),
        ({"schedule": 3, "total_steps": 10}, "must be a name or an annealbench Schedule"),
        ({"schedule": "sig", "total_steps": 10, "scale": [1.0, 2.0]}, "2 entries for 1"),
        ({"schedule": "sig", "total_steps": 10, "scale": -1.0}, "finite number > 0"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ScheduleError, match=match):
        AnnealingLR(make_optimizer(), **kwargs)


def test_load_state_of_another_schedule_is_refused():
    opt = make_optimizer()
    state = AnnealingLR(opt, "sig", 10).state_dict()
    with pytest.raises(ScheduleError, match="different schedule"):
        AnnealingLR(make_optimizer(), "exp", 10).load_state_dict(state)
    with pytest.raises(ScheduleError, match="total_steps=10"):
        AnnealingLR(make_optimizer(), "sig", 20).load_state_dict(state)
