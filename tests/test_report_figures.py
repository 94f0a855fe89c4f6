"""Figures: what each panel draws, checked on the matplotlib objects (no file written)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from annealbench import schedules
from annealbench.report import figures


def epochs_frame(methods: dict[str, list[list[float]]], model: str = "nn2") -> pd.DataFrame:
    """method -> one list of test accuracies per seed; lr = 0.1 / epoch."""
    rows = []
    for method, trials in methods.items():
        for seed, accs in enumerate(trials):
            for epoch, acc in enumerate(accs, start=1):
                rows.append(("mnist", model, method, seed, epoch, 0.1 / epoch, acc))
    columns = ["dataset", "model", "method", "seed", "epoch", "lr", "test_acc"]
    return pd.DataFrame(rows, columns=columns)


def lines_by_label(ax) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata()) for line in ax.get_lines()}


def test_figure_one_draws_the_eight_schedules_in_the_papers_grid() -> None:
    fig = figures.schedules_figure(total_epochs=100)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["0.1", "exp", "str", "sig"] + [
        "rep",
        "trap",
        "str+",
        "sig+",
    ]
    for ax in axes:
        (line,) = ax.get_lines()
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        assert x[0] == 0 and x[-1] == 100
        expected = schedules.get(ax.get_title())(x / 100)
        assert np.allclose(y, expected)
    # Warmup schedules start at the warmup rate, decays at the upper bound (section 4.1).
    assert lines_by_label(axes[6])["_child0"][0] == pytest.approx(0.01)


def test_accuracy_curves_split_decay_and_warmup_and_average_over_trials() -> None:
    frame = epochs_frame(
        {
            "exp": [[80.0, 90.0], [82.0, 94.0]],
            "sig": [[70.0, 91.0], [72.0, 93.0]],
            "sig+": [[60.0, 95.0], [62.0, 97.0]],
            "0.01": [[50.0, 60.0]],
        }
    )
    fig = figures.accuracy_figure(frame, "mnist")
    decay, warmup, other = fig.axes  # one model, three rows
    assert decay.get_title() == "NN-2"
    assert decay.get_ylabel().startswith("decay") and warmup.get_ylabel().startswith("warmup")
    assert set(lines_by_label(decay)) == {"exp", "sig"}
    assert set(lines_by_label(warmup)) == {"sig", "sig+"}  # sig is in both, as in the paper
    assert set(lines_by_label(other)) == {"0.01"}
    assert lines_by_label(decay)["exp"] == pytest.approx([81.0, 92.0])
    # The band is mean ± std (ddof=1) over the trials: std of (90, 94) = 2.83.
    band = decay.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(92.0 + np.std([90.0, 94.0], ddof=1))


def test_accuracy_curves_need_finished_epochs() -> None:
    with pytest.raises(ValueError, match="no finished epochs"):
        figures.accuracy_figure(epochs_frame({"exp": [[1.0]]}), "cifar10")


def test_learning_rates_are_the_stored_ones_one_panel_per_model() -> None:
    frame = pd.concat(
        [
            epochs_frame({"exp": [[1.0, 2.0, 3.0]], "adam": [[1.0, 2.0, 3.0]]}),
            epochs_frame({"exp": [[1.0, 2.0, 3.0]]}, model="resnet18"),
        ]
    )
    fig = figures.lr_figure(frame, "mnist")
    nn2, resnet = fig.axes
    assert (nn2.get_title(), resnet.get_title()) == ("NN-2", "ResNet-18")
    assert nn2.get_yscale() == "log"
    assert lines_by_label(nn2)["exp"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert set(lines_by_label(resnet)) == {"exp"}


def test_each_method_keeps_its_color_and_panel_mates_differ() -> None:
    assert figures.method_color("sig+") == figures.method_color("sig+")
    for group in (figures.DECAY_METHODS, figures.WARMUP_METHODS):
        colors = [figures.method_color(m) for m in group]
        assert len(set(colors)) == len(colors)
