"""Figures: what each panel draws, checked on the matplotlib objects (no file written)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from annealbench import methods, schedules
from annealbench.report import figures


def epochs_frame(methods: dict[str, list[list[float]]], model: str = "nn2") -> pd.DataFrame:
    """method -> one list of test accuracies per seed; lr = 0.1 / epoch; the losses fall
    from 2 (train) and 2.5 (test) by the accuracy's share."""
    rows = []
    for method, trials in methods.items():
        for seed, accs in enumerate(trials):
            for epoch, acc in enumerate(accs, start=1):
                train_loss, test_loss = 2.0 * (1 - acc / 100), 2.5 * (1 - acc / 100)
                rows.append(
                    ("mnist", model, method, seed, epoch, 0.1 / epoch, acc, train_loss, test_loss)
                )
    columns = ["dataset", "model", "method", "seed", "epoch", "lr", "test_acc"]
    return pd.DataFrame(rows, columns=[*columns, "train_loss", "test_loss"])


def lines_by_label(ax) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}


def lines_by_gid(ax) -> dict[str, object]:
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_figure_one_draws_every_paper_schedule_in_panels_titled_by_what_they_hold() -> None:
    fig = figures.schedules_figure(total_epochs=100)
    axes = fig.axes
    drawn = [gid for ax in axes for gid in lines_by_gid(ax)]
    assert drawn == list(schedules.PAPER_SCHEDULES)  # all of them, constants included
    assert [ax.get_title() for ax in axes] == [
        "0.1, 0.01, 0.001: constant",
        "exp: decay",
        "str: decay",
        "sig: decay",
        "rep: restarts, no warmup",
        "trap: warmup (first 10%), then down",
        "str+: warmup (first 10%), then down",
        "sig+: warmup (first 10%), then down",
    ]
    for ax in axes:
        for name, line in lines_by_gid(ax).items():
            x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
            assert x[0] == 0 and x[-1] == 100
            assert np.allclose(y, schedules.get(name)(x / 100))
            low, high = ax.get_ylim()
            assert low <= y.min() and y.max() <= high
    # Warmup schedules start at the warmup rate, decays at the upper bound (section 4.1).
    assert lines_by_gid(axes[7])["sig+"].get_ydata()[0] == pytest.approx(0.01)
    assert "warmup" not in fig.get_suptitle()


def test_figure_one_caption_is_true_rep_has_no_warmup() -> None:
    caption = figures.schedules_caption(100)
    assert "100-epoch run" in caption
    assert "restarts, no warmup: rep" in caption
    assert "then down: trap, str+, sig+" in caption
    assert "constant: 0.1, 0.01, 0.001" in caption
    for name in schedules.PAPER_SCHEDULES:
        assert name in caption
    chosen = figures.schedules_caption(50, ["cosine", "onecycle"])
    assert "Figure 1" not in chosen
    assert "decay: cosine" in chosen and "warmup (first 30%), then down: onecycle" in chosen


def test_figure_one_draws_exactly_the_chosen_schedules() -> None:
    fig = figures.schedules_figure(40, ["sgdr", "sig+", "0.01", "cosine", "wsd"])
    assert [gid for ax in fig.axes for gid in lines_by_gid(ax)] == [
        "sgdr",
        "sig+",
        "0.01",
        "cosine",
        "wsd",
    ]
    assert len(fig.axes) == 5  # the empty slots of the 2 x 4 grid are removed
    assert fig.axes[0].get_title() == "sgdr: restarts, no warmup"
    assert fig.axes[0].get_xlim() == (0, 40)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("0.001", "constant"),
        ("exp", "decaying"),
        ("str", "decaying"),
        ("rep", "restarts"),
        ("sgdr", "restarts"),
        ("trap", "warmup"),
        ("sig+", "warmup"),
        ("onecycle", "warmup"),
    ],
)
def test_schedule_kinds_come_from_the_curves(name, kind) -> None:
    assert figures.schedule_kind(schedules.get(name)) == kind


def test_accuracy_panels_are_titled_by_what_they_hold() -> None:
    frame = epochs_frame(
        {
            "exp": [[80.0, 90.0], [82.0, 94.0]],
            "sig": [[70.0, 91.0], [72.0, 93.0]],
            "sig+": [[60.0, 95.0], [62.0, 97.0]],
            "0.01": [[50.0, 60.0]],
            "rep": [[55.0, 66.0]],
            "adam": [[85.0, 88.0]],
            "rms": [[84.0, 87.0]],
        }
    )
    fig = figures.accuracy_figure(frame, "mnist")
    titles = [ax.get_title() for ax in fig.axes]  # one model, one row per kind
    assert titles == [
        "NN-2: constant-rate SGD",
        "NN-2: decaying SGD",
        "NN-2: SGD with warmup",
        "NN-2: SGD with restarts",
        "NN-2: adaptive (RMSprop, Adam)",
    ]
    constant, decay, warmup, restarts, adaptive = (set(lines_by_label(ax)) for ax in fig.axes)
    assert (constant, decay, warmup, restarts) == ({"0.01"}, {"exp", "sig"}, {"sig+"}, {"rep"})
    assert adaptive == {"rms", "adam"}  # Adam is no longer in a panel called "decay"
    assert lines_by_label(fig.axes[1])["exp"] == pytest.approx([81.0, 92.0])
    # The band is mean ± std (ddof=1) over the trials: std of (90, 94) = 2.83.
    band = fig.axes[1].collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(92.0 + np.std([90.0, 94.0], ddof=1))


def test_accuracy_axis_shows_every_point_first_epochs_included() -> None:
    frame = epochs_frame({"exp": [[12.0, 80.0, 97.0, 97.5]] * 2, "sig+": [[9.0, 85.0, 98.0, 98.2]]})
    fig = figures.accuracy_figure(frame, "mnist")
    low, high = fig.axes[0].get_ylim()
    for ax in fig.axes:
        for values in lines_by_label(ax).values():
            assert low <= values.min() and values.max() <= high
    assert low <= 9.0


def test_a_user_method_is_grouped_from_its_stored_definition() -> None:
    frame = epochs_frame({"mine": [[50.0, 60.0]], "who": [[40.0, 45.0]]})
    custom = methods.Method("mine", "sgd", "cosine+").to_config()
    frame["config"] = [
        json.dumps({"custom_method": custom if m == "mine" else None}) for m in frame["method"]
    ]
    fig = figures.accuracy_figure(frame, "mnist")
    assert [ax.get_title() for ax in fig.axes] == [
        "NN-2: SGD with warmup",
        "NN-2: other (definition unknown)",
    ]


def test_accuracy_curves_need_finished_epochs() -> None:
    with pytest.raises(ValueError, match="no finished epochs"):
        figures.accuracy_figure(epochs_frame({"exp": [[1.0]]}), "cifar10")


def test_loss_figure_draws_train_and_test_loss_per_method() -> None:
    frame = epochs_frame({"exp": [[50.0, 90.0], [60.0, 80.0]], "sig+": [[40.0, 95.0]]})
    fig = figures.loss_figure(frame, "mnist")
    train, test = fig.axes  # one model: a train row and a test row
    assert train.get_title() == "NN-2: train loss" and test.get_title() == "NN-2: test loss"
    assert set(lines_by_gid(train)) == {"train_loss:exp", "train_loss:sig+"}
    assert set(lines_by_gid(test)) == {"test_loss:exp", "test_loss:sig+"}
    exp_train = lines_by_gid(train)["train_loss:exp"].get_ydata()
    assert exp_train == pytest.approx([2.0 * 0.45, 2.0 * 0.15])  # mean over the two trials
    assert len(train.collections) == 2  # one band per method
    low, high = train.get_ylim()
    for ax in (train, test):
        for line in ax.get_lines():
            assert low <= min(line.get_ydata()) and max(line.get_ydata()) <= high
    with pytest.raises(ValueError, match="no losses"):
        figures.loss_figure(frame, "cifar10")


def test_learning_rates_are_drawn_per_update_over_the_stored_points() -> None:
    frame = pd.concat(
        [
            epochs_frame({"sig+": [[1.0] * 10], "adam": [[1.0] * 10]}),
            epochs_frame({"exp": [[1.0, 2.0, 3.0]]}, model="resnet18"),
        ]
    )
    fig = figures.lr_figure(frame, "mnist")
    nn2, resnet = fig.axes
    assert (nn2.get_title(), resnet.get_title()) == ("NN-2", "ResNet-18")
    assert nn2.get_yscale() == "log"
    stored = lines_by_gid(resnet)["stored:exp"]
    assert stored.get_ydata() == pytest.approx([0.1, 0.05, 0.1 / 3])  # as the store holds them
    sig_plus = lines_by_gid(nn2)["schedule:sig+"]
    x, y = np.asarray(sig_plus.get_xdata()), np.asarray(sig_plus.get_ydata())
    assert len(x) >= 1000 and x[-1] == 10
    ramp = y[x < 1.0]  # the first 10% of a 10-epoch run: up from 0.01 to 0.1
    assert len(ramp) >= 50 and np.all(np.diff(ramp) > 0)
    assert ramp[0] == pytest.approx(0.01) and ramp[-1] == pytest.approx(0.1, rel=0.01)
    assert y.max() == pytest.approx(0.1, rel=0.01) and y[-1] < 0.002
    assert np.allclose(lines_by_gid(nn2)["schedule:adam"].get_ydata(), 1e-3)
    low, high = nn2.get_ylim()
    for ax in fig.axes:
        for line in ax.get_lines():
            assert low <= min(line.get_ydata()) and max(line.get_ydata()) <= high


def test_learning_rates_at_every_update_when_the_steps_are_known() -> None:
    frame = epochs_frame({"sig+": [[1.0] * 4]})
    fig = figures.lr_figure(frame, "mnist", steps_per_epoch=469)
    line = lines_by_gid(fig.axes[0])["schedule:sig+"]
    assert len(line.get_xdata()) == 4 * 469 + 1
    assert line.get_ydata()[100] == pytest.approx(schedules.get("sig+")(100 / (4 * 469)))


def test_a_method_without_a_definition_shows_its_stored_rates_only() -> None:
    frame = epochs_frame({"who": [[1.0, 2.0]]})
    (ax,) = figures.lr_figure(frame, "mnist").axes
    assert set(lines_by_gid(ax)) == {"stored:who"}
    assert set(lines_by_label(ax)) == {"who"}


def test_each_method_keeps_its_color_and_panel_mates_differ() -> None:
    assert figures.method_color("sig+") == figures.method_color("sig+")
    for group in (figures.DECAY_METHODS, figures.WARMUP_METHODS, schedules.PAPER_SCHEDULES):
        colors = [figures.method_color(m) for m in group]
        assert len(set(colors)) == len(colors)


def test_panel_rows_name_what_each_accuracy_row_holds() -> None:
    frame = epochs_frame({"adam": [[1.0]], "sig": [[1.0]], "trap": [[1.0]]})
    assert figures.panel_rows(frame, "mnist") == [
        ("decaying SGD", ["sig"]),
        ("SGD with warmup", ["trap"]),
        ("adaptive (Adam)", ["adam"]),
    ]
