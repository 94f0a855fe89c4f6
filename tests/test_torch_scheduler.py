"""AnnealingLR: the closed form, equality with PyTorch's schedulers, exact resume, errors,
per-group schedules, and what is counted (optimizer updates, not step() calls alone)."""

from __future__ import annotations

import gc
import io
import warnings
import weakref

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
from conftest import readme_block

SNIPPET = "### A schedule per param group"  # the README section
#: The warning of a schedule stepped past total_steps, expected where a test does so.
PAST = "ignore:AnnealingLR has been stepped past total_steps"


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
    with pytest.warns(UserWarning, match=r"past total_steps=50 \(step\(\) calls: 51"):
        got = rates(sched, opt, 60)
    assert got == [pytest.approx(s(min(k, 50) / 50), rel=0, abs=0) for k in range(60)]
    assert got[-1] == s(1.0)  # past total_steps the final rate holds


@pytest.mark.filterwarnings(PAST)
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


@pytest.mark.filterwarnings(PAST)
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


@pytest.mark.filterwarnings(PAST)
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
        ({"schedule": 3, "total_steps": 10}, "must be a name from .* or a Schedule, got int"),
        ({"schedule": "sig", "total_steps": 10, "scale": [1.0, 2.0]}, "2 entries for 1"),
        ({"schedule": "sig", "total_steps": 10, "scale": -1.0}, "finite number > 0"),
        ({"schedule": ["sig", "exp"], "total_steps": 10}, "2 entries for 1 param groups"),
        ({"schedule": [], "total_steps": 10}, "0 entries for 1 param groups"),
        ({"schedule": [3], "total_steps": 10}, "one per param group"),
        ({"schedule": ["nope"], "total_steps": 10}, "valid names"),
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


# Per-group schedules.


def two_groups(lrs: tuple[float, float] = (0.01, 0.1)) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, momentum=0.9)


def group_rates(scheduler, optimizer, steps: int) -> list[list[float]]:
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def test_a_schedule_per_group_anneals_each_group_on_its_own_curve():
    total = 40
    sig_plus, exp = schedules.get("sig+"), schedules.get("exp", lr_up=0.5)
    opt = two_groups()
    sched = AnnealingLR(opt, ["sig+", exp], total, scale=[1.0, 2.0])
    assert sched.schedule == (sig_plus, exp) and sched.schedules == [sig_plus, exp]
    got = group_rates(sched, opt, total)
    assert got == [
        [sig_plus(k / total) * (0.01 / sig_plus.peak), exp(k / total) * (0.1 / exp.peak * 2.0)]
        for k in range(total)
    ]
    absolute = AnnealingLR(two_groups(), ["sig+", exp], total, absolute=True)
    assert absolute.get_last_lr() == [sig_plus(0.0), exp(0.0)]


def test_one_schedule_in_a_list_is_the_single_schedule():
    a, b = make_optimizer(groups=2), make_optimizer(groups=2)
    listed = group_rates(AnnealingLR(a, ["cosine", "cosine"], 20), a, 20)
    single = group_rates(AnnealingLR(b, "cosine", 20), b, 20)
    assert listed == single


def test_per_group_state_round_trips_as_plain_data_and_resumes_exactly():
    total, cut = 30, 13
    opt = two_groups()
    uninterrupted = group_rates(AnnealingLR(opt, ["str+", "cosine+"], total), opt, total)

    opt1 = two_groups()
    first = AnnealingLR(opt1, ["str+", "cosine+"], total)
    head = group_rates(first, opt1, cut)
    buffer = io.BytesIO()
    torch.save({"sched": first.state_dict(), "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["sched"]["schedule"] == [schedules.get(n).to_config() for n in ("str+", "cosine+")]

    opt2 = two_groups(lrs=(5.0, 7.0))
    second = AnnealingLR(opt2, ["str+", "cosine+"], total)
    opt2.load_state_dict(saved["opt"])
    second.load_state_dict(saved["sched"])
    assert head + group_rates(second, opt2, total - cut) == uninterrupted


def test_a_state_for_other_schedules_or_groups_is_refused():
    state = AnnealingLR(two_groups(), ["sig", "exp"], 10).state_dict()
    with pytest.raises(ScheduleError, match="different schedule: param group 1: saved"):
        AnnealingLR(two_groups(), ["sig", "cosine"], 10).load_state_dict(state)
    with pytest.raises(ScheduleError, match="different schedule: param group 0"):
        AnnealingLR(two_groups(), "exp", 10).load_state_dict(state)
    with pytest.raises(ScheduleError, match="saved for 2 param groups, the optimizer has 1"):
        AnnealingLR(make_optimizer(), "sig", 10).load_state_dict(state)
    # One schedule for every group is the same as that schedule listed per group.
    one = AnnealingLR(two_groups(), "sig", 10).state_dict()
    AnnealingLR(two_groups(), ["sig", "sig"], 10).load_state_dict(one)
    per_group = AnnealingLR(two_groups(), ["sig", "sig"], 10).state_dict()
    AnnealingLR(two_groups(), "sig", 10).load_state_dict(per_group)
    with pytest.raises(ScheduleError, match="different schedule: param group 1"):
        AnnealingLR(two_groups(), ["sig", "exp"], 10).load_state_dict(one)


def test_a_state_saved_before_updates_were_counted_loads():
    """The state format before per-group schedules and update counting: it resumes."""
    total = 20
    opt = make_optimizer()
    uninterrupted = rates(AnnealingLR(opt, "rep", total), opt, total)
    opt1 = make_optimizer()
    first = AnnealingLR(opt1, "rep", total)
    head = rates(first, opt1, 7)
    old = {
        "schedule": schedules.get("rep").to_config(),
        "total_steps": total,
        "scale": [1.0],
        "absolute": False,
        "base_lrs": [0.1],
        "last_epoch": 7,
        "_step_count": 8,
    }
    assert {k: v for k, v in first.state_dict().items() if k != "updates"} == old
    opt2 = make_optimizer()
    second = AnnealingLR(opt2, "rep", total)
    second.load_state_dict(old)
    assert (second.last_epoch, second.updates, second.position) == (7, 7, 7)
    assert head + rates(second, opt2, total - 7) == uninterrupted


# What is counted: the position is min(step() calls, optimizer updates).


def update_rates(optimizer) -> list[float]:
    """The lr each later optimizer update is made with (group 0), filled in as they happen."""
    seen: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append(opt.param_groups[0]["lr"]))
    return seen


def test_the_usual_loops_warn_nothing():
    s = schedules.get("sig+")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = make_optimizer()
        sched = AnnealingLR(opt, s, 25)  # per iteration: exactly total_steps updates
        assert rates(sched, opt, 25) == [s(k / 25) for k in range(25)]
        assert (sched.last_epoch, sched.updates, sched.position) == (25, 25, 25)

        opt = make_optimizer()  # per epoch: 6 updates an epoch, total_steps in epochs
        sched = AnnealingLR(opt, s, 5)
        seen = update_rates(opt)
        for _ in range(5):
            for _ in range(6):
                opt.step()
            sched.step()
        assert seen == [s(epoch / 5) for epoch in range(5) for _ in range(6)]
        assert (sched.last_epoch, sched.updates, sched.position) == (5, 30, 5)


def test_stepping_per_micro_batch_follows_the_updates_and_warns_once():
    """With 4 micro-batches an update and scheduler.step() after each, the rate still
    changes once an update: gradient accumulation neither stretches nor shrinks it."""
    total, accumulation = 10, 4
    s = schedules.get("cosine+")
    opt = make_optimizer()
    sched = AnnealingLR(opt, s, total)
    seen = update_rates(opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(total):
            for micro in range(accumulation):
                if micro == accumulation - 1:
                    opt.step()
                sched.step()
    ours = [str(w.message) for w in caught if "AnnealingLR" in str(w.message)]
    assert len(ours) == 1, ours
    assert (
        "called more often than optimizer.step() (step() calls: 1, optimizer updates: 0)"
        in (ours[0])
    )
    assert "len(loader) // accumulation * epochs" in ours[0]
    assert seen == [s(k / total) for k in range(total)]
    assert (sched.last_epoch, sched.updates, sched.position) == (total * accumulation, total, total)
    assert opt.param_groups[0]["lr"] == s(1.0)


def test_a_skipped_update_holds_the_rate():
    """An update skipped (as a GradScaler does on inf gradients) does not advance the rate."""
    s = schedules.get("linear")
    opt = make_optimizer()
    sched = AnnealingLR(opt, s, 10)
    seen = update_rates(opt)
    with pytest.warns(UserWarning, match=r"step\(\) calls: 4, optimizer updates: 3"):
        for k in range(10):
            if k != 3:
                opt.step()
            sched.step()
    assert seen == [s(k / 10) for k in (0, 1, 2, 3, 4, 5, 6, 7, 8)]
    assert sched.position == 9


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_scheduler_before_optimizer_still_gives_each_update_its_rate():
    s = schedules.get("exp")
    opt = make_optimizer()
    sched = AnnealingLR(opt, s, 8)
    seen = update_rates(opt)
    with pytest.warns(UserWarning, match="more often than optimizer.step"):
        for _ in range(8):
            sched.step()
            opt.step()
    assert seen == [s(k / 8) for k in range(8)]


def test_stepping_past_total_steps_warns_once_with_the_numbers_and_holds():
    s = schedules.get("sig")
    opt = make_optimizer()
    sched = AnnealingLR(opt, s, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rates(sched, opt, 9)
    ours = [str(w.message) for w in caught if "AnnealingLR" in str(w.message)]
    assert ours == [
        "AnnealingLR has been stepped past total_steps=5 (step() calls: 6, optimizer updates: "
        "6); the final rate holds from here on. If training is meant to run this long, set "
        "total_steps to its number of optimizer updates (len(loader) // accumulation * "
        "epochs), or of epochs when stepping once an epoch."
    ]
    assert got == [s(min(k, 5) / 5) for k in range(9)]
    assert opt.param_groups[0]["lr"] == s(1.0)


def test_resume_keeps_both_counts():
    """Saved between micro-batch steps (ahead of the updates), resumed: the same rates."""
    total, accumulation, cut = 12, 3, 17  # 17 step() calls: 5 updates and 2 micro-batches

    def run(sched, opt, calls: range) -> list[float]:
        seen = update_rates(opt)
        for call in calls:
            if call % accumulation == accumulation - 1:
                opt.step()
            sched.step()
        return seen

    calls = range(total * accumulation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = make_optimizer()
        uninterrupted = run(AnnealingLR(opt, "wsd", total), opt, calls)
        opt1 = make_optimizer()
        first = AnnealingLR(opt1, "wsd", total)
        head = run(first, opt1, calls[:cut])
        state = first.state_dict()
        assert (state["last_epoch"], state["updates"]) == (17, 5)
        opt2 = make_optimizer()
        second = AnnealingLR(opt2, "wsd", total)
        second.load_state_dict(state)
        assert (second.last_epoch, second.updates, second.position) == (17, 5, 5)
        tail = run(second, opt2, calls[cut:])
    assert head + tail == uninterrupted


def test_in_a_sequential_lr_after_a_warmup():
    """The second scheduler of SequentialLR restarts its count at the milestone: updates
    made before do not move it on (nor does the cap hold it back)."""
    cosine = schedules.get("cosine")
    opt = make_optimizer()
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt, [warm, AnnealingLR(opt, cosine, 20)], milestones=[5]
    )
    got = rates(sched, opt, 25)
    assert got[5:] == [cosine(k / 20) for k in range(20)]


def test_the_hook_does_not_keep_the_scheduler_alive():
    opt = make_optimizer()
    sched = AnnealingLR(opt, "sig", 10)
    gone = weakref.ref(sched)
    del sched
    gc.collect()
    assert gone() is None and not opt._optimizer_step_post_hooks
    opt.step()


def test_constructing_with_last_epoch_keeps_torchs_meaning():
    """torch's last_epoch=k resumes at k + 1 (its __init__ steps once); the updates agree."""
    s = schedules.get("linear")
    opt = make_optimizer()
    opt.param_groups[0]["initial_lr"] = 0.1
    sched = AnnealingLR(opt, s, 10, last_epoch=4)
    assert (sched.last_epoch, sched.updates) == (5, 5)
    assert opt.param_groups[0]["lr"] == s(0.5)


def test_the_param_groups_snippet_runs_as_written(tmp_path, monkeypatch):
    blocks = [readme_block(SNIPPET)]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    cosine_plus, sig_plus = schedules.get("cosine+"), schedules.get("sig+")
    assert namespace["scheduler"].get_last_lr() == [
        cosine_plus(1.0) * (0.01 / cosine_plus.peak),
        sig_plus(1.0) * (0.1 / sig_plus.peak),
    ]
    saved = torch.load(tmp_path / "groups.pt", weights_only=True)
    assert len(saved["scheduler"]["schedule"]) == 2
