"""Figures: the schedules (paper's Figure 1), accuracy over epochs (Figures 2-5) and the
learning rates the runs used. Built on ``matplotlib.figure.Figure`` (Agg, no pyplot state)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from annealbench.report.paper import (
    DECAY_METHODS,
    WARMUP_METHODS,
    dataset_label,
    model_label,
    order_methods,
    order_models,
)

# Figure 1's grid: top row decay, bottom row warmup (the paper's arrangement).
FIGURE1_GRID: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("0.1", "exp", "str", "sig"),
    ("rep", "trap", "str+", "sig+"),
)
PANEL_W, PANEL_H = 3.2, 2.6
DPI = 110

# One distinct color per paper method; the methods that share a panel never share a color.
_PALETTE = {
    "0.1": "#1f77b4",
    "0.01": "#393b79",
    "0.001": "#bcbd22",
    "exp": "#d62728",
    "str": "#9467bd",
    "sig": "#000000",
    "rms": "#e377c2",
    "adam": "#7f7f7f",
    "rep": "#2ca02c",
    "trap": "#17becf",
    "str+": "#8c564b",
    "sig+": "#ff7f0e",
}
_EXTRA = ["#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]
ADAPTIVE = ("rms", "adam")


def _figure(columns: int, rows: int, legend: bool, **subplots: object) -> tuple[Figure, object]:
    """A figure of ``rows`` x ``columns`` panels with fixed margins in inches (room for the
    suptitle, axis labels and a legend on the right). Fixed margins instead of constrained
    layout: it halves the time to save a figure, which the tests and `make run` feel."""
    left, right, top, bottom = 0.95, (1.2 if legend else 0.25), 0.75, 0.55
    width = max(left + right + PANEL_W * columns, 7.0)  # room for the suptitle
    height = top + bottom + PANEL_H * rows
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False, **subplots)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=0.12,
        hspace=0.22,
    )
    return fig, axes


def method_color(method: str) -> str:
    """One color per method, the same in every figure."""
    if method in _PALETTE:
        return _PALETTE[method]
    return _EXTRA[sum(map(ord, method)) % len(_EXTRA)]


def schedules_figure(total_epochs: int = 100) -> Figure:
    """Figure 1: the learning rate over the epochs of a ``total_epochs`` run, 2 x 4 panels."""
    from annealbench import schedules

    progress = np.linspace(0.0, 1.0, 1001)
    fig, axes = _figure(4, 2, legend=False, sharex=True, sharey=True)
    for row, names in enumerate(FIGURE1_GRID):
        for col, name in enumerate(names):
            ax = axes[row, col]
            rate = np.broadcast_to(schedules.get(name)(progress), progress.shape)
            ax.plot(progress * total_epochs, rate, color=method_color(name), lw=1.8)
            ax.set_title(name)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel("learning rate")
    axes[0, 0].set_xlim(0, total_epochs)
    axes[0, 0].set_ylim(0, None)
    fig.suptitle(
        f"Learning-rate schedules over a {total_epochs}-epoch run (top: decay, bottom: warmup)"
    )
    return fig


def _panel_rows(methods: list[str]) -> list[tuple[str, list[str]]]:
    """The paper's split: decay methods, warmup methods, then anything else in the study."""
    rows = []
    decay = [m for m in methods if m in DECAY_METHODS]
    warmup = [m for m in methods if m in WARMUP_METHODS]
    other = [m for m in methods if m not in DECAY_METHODS and m not in WARMUP_METHODS]
    for title, group in (("decay", decay), ("warmup", warmup), ("other", other)):
        if group:
            rows.append((title, order_methods(group)))
    return rows


def _accuracy_limits(curves: pd.DataFrame) -> tuple[float, float]:
    """A y-range fixed for the whole dataset (as in the paper) that shows where runs end up:
    from the 5th percentile of all mean accuracies to the top of the bands."""
    low = float(np.nanpercentile(curves["mean"], 5))
    high = float(np.nanmax(curves["mean"] + curves["std"].fillna(0)))
    pad = max(0.5, 0.05 * (high - low))
    return (max(0.0, low - pad), min(100.0, high + pad))


def curve_frame(epochs: pd.DataFrame, column: str = "test_acc") -> pd.DataFrame:
    """Mean, std and trial count of ``column`` per dataset, model, method and epoch."""
    grouped = epochs.groupby(["dataset", "model", "method", "epoch"])[column]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def accuracy_figure(epochs: pd.DataFrame, dataset: str) -> Figure:
    """Figures 2-5 for one dataset: test accuracy over epochs, mean over trials with a band of
    one standard deviation; rows: decay / warmup (/ other) methods, one column per model.

    ``epochs`` should hold finished ("done") runs only.
    """
    curves = curve_frame(epochs[epochs["dataset"] == dataset])
    if curves.empty:
        raise ValueError(f"no finished epochs for dataset {dataset!r}")
    models = order_models(curves["model"])
    rows = _panel_rows(order_methods(curves["method"]))
    fig, axes = _figure(len(models), len(rows), legend=True, sharex=True, sharey=True)
    for r, (title, methods) in enumerate(rows):
        for c, model in enumerate(models):
            ax = axes[r, c]
            for method in methods:
                line = curves[(curves["model"] == model) & (curves["method"] == method)]
                if line.empty:
                    continue
                x, mean = line["epoch"].to_numpy(), line["mean"].to_numpy()
                std = line["std"].fillna(0).to_numpy()
                color = method_color(method)
                ax.plot(x, mean, color=color, lw=1.4, label=method)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(model_label(model))
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
            if c == 0:
                ax.set_ylabel(f"{title}: test acc. (%)")
        handles, labels = axes[r, 0].get_legend_handles_labels()
        for ax in axes[r, 1:]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
        axes[r, -1].legend(
            handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False
        )
    axes[0, 0].set_ylim(*_accuracy_limits(curves))
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(
        f"{dataset_label(dataset)}: test accuracy over epochs (mean over trials, band ±1 std)"
    )
    return fig


def lr_figure(epochs: pd.DataFrame, dataset: str) -> Figure:
    """The learning rate each method's runs used per epoch (the store's ``lr``: the rate of
    the epoch's last step), one panel per model, log scale. For rms/adam it is the base rate."""
    curves = curve_frame(epochs[(epochs["dataset"] == dataset) & epochs["lr"].notna()], "lr")
    if curves.empty:
        raise ValueError(f"no learning rates stored for dataset {dataset!r}")
    models = order_models(curves["model"])
    methods = order_methods(curves["method"])
    fig, grid = _figure(len(models), 1, legend=True, sharex=True, sharey=True)
    axes = grid[0]
    for ax, model in zip(axes, models, strict=True):
        for method in methods:
            line = curves[(curves["model"] == model) & (curves["method"] == method)]
            if not line.empty:
                style = "--" if method in ADAPTIVE else "-"  # rms and adam often coincide
                ax.plot(
                    line["epoch"], line["mean"], style, color=method_color(method), label=method
                )
        ax.set_yscale("log")
        ax.set_title(model_label(model))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    positive = curves.loc[curves["mean"] > 0, "mean"]
    if not positive.empty:  # explicit limits: a log axis of one constant rate autoscales badly
        axes[0].set_ylim(positive.min() / 1.6, positive.max() * 1.6)
    axes[0].set_ylabel("learning rate")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    axes[-1].legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False
    )
    fig.suptitle(f"{dataset_label(dataset)}: learning rates used by the runs")
    return fig


def save(fig: Figure, folder: Path, stem: str) -> tuple[Path, Path, bytes]:
    """Write ``stem.png`` and ``stem.pdf``; return both paths and the PNG bytes (for HTML)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    png_bytes = buffer.getvalue()
    png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
    png.write_bytes(png_bytes)
    fig.savefig(pdf, format="pdf")
    return png, pdf, png_bytes
