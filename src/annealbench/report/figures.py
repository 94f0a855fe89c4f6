"""Figures: the schedules (paper's Figure 1), accuracy and loss over epochs (Figures 2-5) and
the learning rates the runs used. Built on ``matplotlib.figure.Figure`` (Agg, no pyplot state).

Every figure shows all of its data: axis limits cover every drawn point. Panels are labelled
by what they hold, from each method's definition (its optimizer and the shape of its rate).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from annealbench.report.paper import (
    DECAY_METHODS,
    WARMUP_METHODS,
    dataset_label,
    entry_point_models,
    model_label,
    model_labels,
    order_methods,
    order_models,
)

if TYPE_CHECKING:  # pragma: no cover
    from annealbench.methods import Method
    from annealbench.schedules import Schedule

__all__ = [
    "DECAY_METHODS",
    "WARMUP_METHODS",
    "accuracy_figure",
    "curve_frame",
    "loss_figure",
    "lr_figure",
    "method_color",
    "method_definitions",
    "method_group",
    "panel_rows",
    "save",
    "schedule_kind",
    "schedules_caption",
    "schedules_figure",
]

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
    # Today's baselines (annealbench.methods.MODERN_METHODS): distinct from the paper's.
    "cosine": "#6b6ecf",
    "cosine0": "#9c9ede",
    "linear0": "#637939",
    "cosine+": "#5254a3",
    "cosine0+": "#ad494a",
    "linear0+": "#b5cf6b",
    "wsd": "#e6550d",
    "onecycle": "#31a354",
    "adamw-cosine": "#843c39",
    "sf-sgd": "#de9ed6",
    "sf-adamw": "#8c6d31",
}
_EXTRA = ["#7b4173", "#3182bd", "#fdae6b", "#756bb1", "#e7969c", "#a55194", "#6baed6"]

#: Panel groups, in the order the rows are drawn, and their titles.
GROUP_TITLES: dict[str, str] = {
    "constant": "constant-rate SGD",
    "decaying": "decaying SGD",
    "warmup": "SGD with warmup",
    "restarts": "SGD with restarts",
    "adaptive": "adaptive",
    "other": "other (definition unknown)",
}
_OPTIMIZER_LABELS = {"rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
_SHAPE_GRID = np.linspace(0.0, 1.0, 2001)
FIGURE1_POINTS = 1001  # points of each curve of Figure 1 (per run length)
LR_POINTS = 1001  # points of each schedule line of the rate figure when steps are unknown
MAX_LR_POINTS = 200_001  # at most this many per-step points per line


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
        hspace=0.3,
    )
    return fig, axes


def method_color(method: str) -> str:
    """One color per method, the same in every figure."""
    if method in _PALETTE:
        return _PALETTE[method]
    return _EXTRA[sum(map(ord, method)) % len(_EXTRA)]


# --------------------------------------------------------------------------- what a curve is


def _rates(schedule: Schedule, progress: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(schedule(progress), dtype=float), progress.shape)


def schedule_kind(schedule: Schedule) -> str:
    """The shape of a rate curve, from its values on a fine grid of progress: ``constant``,
    ``decaying`` (never rises), ``warmup`` (rises from the start to its peak first) or
    ``restarts`` (starts at its peak and rises again later, as ``rep`` and ``sgdr``)."""
    rate = _rates(schedule, _SHAPE_GRID)
    tol = 1e-9 * float(np.max(np.abs(rate)))
    step = np.diff(rate)
    if np.ptp(rate) <= tol:
        return "constant"
    if np.all(step <= tol):
        return "decaying"
    top = int(np.argmax(rate >= rate.max() - tol))  # where the rate first reaches its peak
    if top > 0 and np.all(step[:top] >= -tol):
        return "warmup"
    return "restarts"


def _warmup_percent(schedule: Schedule) -> float:
    """The share of training (%) before the rate first reaches its peak."""
    rate = _rates(schedule, _SHAPE_GRID)
    top = int(np.argmax(rate >= rate.max() * (1 - 1e-9)))
    return round(100 * float(_SHAPE_GRID[top]))


def _kind_phrase(schedule: Schedule) -> str:
    kind = schedule_kind(schedule)
    if kind == "warmup":
        return f"warmup (first {_warmup_percent(schedule):g}%), then down"
    return {"constant": "constant", "decaying": "decay", "restarts": "restarts, no warmup"}[kind]


def method_group(definition: Method | None) -> str:
    """The panel group of a method (a key of :data:`GROUP_TITLES`): ``adaptive`` for any
    optimizer but SGD, else the shape of its rate; ``other`` without a definition."""
    if definition is None:
        return "other"
    if definition.optimizer != "sgd":
        return "adaptive"
    return schedule_kind(definition.schedule_for("", deep=False))


def _group_title(group: str, definitions: list[Method | None]) -> str:
    if group != "adaptive":
        return GROUP_TITLES[group]
    optimizers = dict.fromkeys(d.optimizer for d in definitions if d is not None)
    return f"adaptive ({', '.join(_OPTIMIZER_LABELS.get(o, o) for o in optimizers)})"


def _custom_method(config: object) -> Mapping | None:
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return None
    custom = config.get("custom_method") if isinstance(config, Mapping) else None
    return custom if isinstance(custom, Mapping) else None


def method_definitions(
    frame: pd.DataFrame, given: Mapping[str, Method] | None = None
) -> dict[str, Method | None]:
    """Each method of ``frame`` -> its definition: ``given`` first, then a user method's
    ``custom_method`` from the runs' configuration (a ``config`` column of JSON, as the
    store's runs frame has it), then :func:`annealbench.methods.get`; None when unknown."""
    from annealbench import methods as methods_mod

    found: dict[str, Method | None] = dict(given or {})
    if "config" in frame:
        for method, config in frame.drop_duplicates("method")[["method", "config"]].values:
            custom = _custom_method(config)
            if method not in found and custom is not None:
                with contextlib.suppress(TypeError, ValueError):  # MethodError: a ValueError
                    found[method] = methods_mod.Method.from_config(custom)
    for method in order_methods(frame["method"]):
        if method not in found:
            try:
                found[method] = methods_mod.get(method)
            except ValueError:
                found[method] = None
    return found


def _schedule_of(definition: Method | None, model: str) -> Schedule | None:
    """The rate curve ``definition`` uses on ``model``; None when it cannot be known.

    Only a model of :func:`model_labels` (built-in or registered here) is looked up; for any
    other (a user's import path, a side-by-side label) only a rate that does not depend on the
    model is drawn, so no user code is imported."""
    if definition is None:
        return None
    try:
        if model in model_labels() and model not in entry_point_models():
            return definition.schedule_for(model)
        if definition.schedule is None and definition.lr is None:
            return None  # an adaptive method's rate depends on the model's depth
        return definition.schedule_for(model, deep=False)
    except (KeyError, ValueError):  # a model this installation does not know
        return None


# --------------------------------------------------------------------------- Figure 1


def _figure1_panels(names: Sequence[str] | None) -> list[tuple[str, ...]]:
    """The chosen schedules one per panel; by default every paper schedule, the constant rates
    sharing the first panel (the paper's 2 x 4 arrangement)."""
    from annealbench import schedules

    if names is not None:
        return [(name,) for name in dict.fromkeys(names)]
    paper = schedules.PAPER_SCHEDULES
    constant = tuple(n for n in paper if schedule_kind(schedules.get(n)) == "constant")
    return [constant] + [(n,) for n in paper if n not in constant]


def schedules_figure(total_epochs: int = 100, names: Sequence[str] | None = None) -> Figure:
    """Figure 1: the learning rate over the epochs of a ``total_epochs`` run. By default every
    paper schedule (the constant rates in one panel, 2 x 4 panels); ``names`` draws exactly
    those schedules, one per panel. Each panel's title says what its curves do; each line's
    gid is its schedule's name. :func:`schedules_caption` describes the same figure."""
    from annealbench import schedules

    panels = _figure1_panels(names)
    if not panels:
        raise ValueError("no schedule to draw")
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    progress = np.linspace(0.0, 1.0, FIGURE1_POINTS)
    fig, axes = _figure(columns, rows, legend=False, sharex=True, sharey=True)
    flat, top = list(axes.ravel()), 0.0
    for i, (ax, panel) in enumerate(zip(flat, panels, strict=False)):
        phrases = []
        for name in panel:
            schedule = schedules.get(name)
            rate = _rates(schedule, progress)
            top = max(top, float(rate.max()))
            ax.plot(progress * total_epochs, rate, color=method_color(name), lw=1.8, label=name)
            ax.lines[-1].set_gid(name)
            phrases.append(_kind_phrase(schedule))
        ax.set_title(f"{', '.join(panel)}: {' / '.join(dict.fromkeys(phrases))}", fontsize=9)
        ax.grid(alpha=0.3)
        if len(panel) > 1:
            ax.legend(fontsize=7, frameon=False)
        if i + columns >= len(panels):  # nothing drawn below it
            ax.set_xlabel("epoch")
            ax.tick_params(labelbottom=True)
        if i % columns == 0:
            ax.set_ylabel("learning rate")
    for ax in flat[len(panels) :]:
        ax.remove()
    flat[0].set_xlim(0, total_epochs)
    flat[0].set_ylim(0, top * 1.05)
    fig.suptitle(f"Learning-rate schedules over a {total_epochs}-epoch run")
    return fig


def schedules_caption(total_epochs: int = 100, names: Sequence[str] | None = None) -> str:
    """A caption true to ``schedules_figure(total_epochs, names)``: the schedules drawn,
    grouped by what their rate does (derived from the curves, not from their names)."""
    from annealbench import schedules

    drawn = [name for panel in _figure1_panels(names) for name in panel]
    groups: dict[str, list[str]] = {}
    for name in drawn:
        groups.setdefault(_kind_phrase(schedules.get(name)), []).append(name)
    parts = "; ".join(f"{phrase}: {', '.join(group)}" for phrase, group in groups.items())
    what = " (the paper's Figure 1)" if names is None else ""
    return f"Learning rate over the epochs of a {total_epochs}-epoch run{what}. {parts}."


# --------------------------------------------------------------------------- curves over epochs


def curve_frame(epochs: pd.DataFrame, column: str = "test_acc") -> pd.DataFrame:
    """Mean, std and trial count of ``column`` per dataset, model, method and epoch."""
    grouped = epochs.groupby(["dataset", "model", "method", "epoch"])[column]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def _panel_rows(
    methods: list[str], definitions: Mapping[str, Method | None]
) -> list[tuple[str, list[str]]]:
    """Rows of panels by what the methods are (:func:`method_group`), titled by it."""
    groups: dict[str, list[str]] = {group: [] for group in GROUP_TITLES}
    for method in methods:
        groups[method_group(definitions.get(method))].append(method)
    return [
        (_group_title(group, [definitions.get(m) for m in members]), order_methods(members))
        for group, members in groups.items()
        if members
    ]


def panel_rows(
    epochs: pd.DataFrame, dataset: str, methods: Mapping[str, Method] | None = None
) -> list[tuple[str, list[str]]]:
    """The rows of :func:`accuracy_figure` for ``dataset``: (title, methods) each, top first;
    for a caption that says what each row holds."""
    frame = epochs[epochs["dataset"] == dataset]
    return _panel_rows(order_methods(frame["method"]), method_definitions(frame, methods))


def _band(
    ax: object, line: pd.DataFrame, method: str, gid: str, style: str = "-", band: bool = True
) -> np.ndarray:
    """Draw a mean line (labelled ``method``, with ``gid``) and its ±1 std band (``band``);
    return the values drawn (for the axis limits). A dashed line (``style="--"``) carries no
    label of its own."""
    x, mean = line["epoch"].to_numpy(), line["mean"].to_numpy()
    std = line["std"].fillna(0).to_numpy()
    color = method_color(method)
    label = method if style == "-" else f"_{method} {gid}"
    (drawn,) = ax.plot(x, mean, style, color=color, lw=1.4 if band else 1.1, label=label)
    drawn.set_gid(gid)
    if not band:
        return mean
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)
    return np.concatenate([mean, mean - std, mean + std])


def _validation_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`curve_frame` of the validation accuracy (empty without any)."""
    if "val_acc" not in frame or not frame["val_acc"].notna().any():
        return pd.DataFrame(columns=["dataset", "model", "method", "epoch", "mean", "std"])
    return curve_frame(frame[frame["val_acc"].notna()], "val_acc")


def _draw_accuracy(ax: object, curves: pd.DataFrame, val: pd.DataFrame, method: str) -> list:
    """One method's test accuracy (solid, with its band) and validation accuracy (dashed,
    without) on ``ax``; the values drawn."""
    drawn = []
    line = curves[curves["method"] == method]
    if not line.empty:
        drawn.append(_band(ax, line, method, f"test_acc:{method}"))
    line = val[val["method"] == method]
    if not line.empty:
        drawn.append(_band(ax, line, method, f"val_acc:{method}", "--", band=False))
    return drawn


def _validation_key(ax: object) -> None:
    """A legend entry for the dashed validation lines, last, when ``ax`` has any."""
    if any(str(line.get_gid()).startswith("val_acc:") for line in ax.get_lines()):
        ax.plot([], [], "--", color="#555555", lw=1.1, label="val (dashed)")


def _limits(values: list[np.ndarray], low: float, high: float) -> tuple[float, float]:
    """Limits that hold every value (clipped to [low, high]), with a little room."""
    flat = np.concatenate(values) if values else np.array([low, high])
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return (low, high)
    bottom, top = max(low, float(flat.min())), min(high, float(flat.max()))
    pad = max(0.02 * (top - bottom), 1e-3 * max(abs(top), 1.0))
    return (max(low, bottom - pad), min(high, top + pad))


def _legend(axes: list, anchor: object) -> None:
    """One legend right of ``anchor`` with every label of ``axes``, each once."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    anchor.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False
    )


def accuracy_figure(
    epochs: pd.DataFrame, dataset: str, methods: Mapping[str, Method] | None = None
) -> Figure:
    """Figures 2-5 for one dataset: test accuracy over epochs, mean over trials with a band of
    one standard deviation; one column per model, one row per kind of method (constant-rate,
    decaying, warmup and restarting SGD, adaptive optimizers, other), from each method's
    definition (:func:`method_definitions`; ``methods`` gives user methods'). The y axis holds
    every mean and band (within 0-100%). Each line's gid is ``test_acc:METHOD``; runs with a
    validation split (a ``val_acc`` column) add a dashed line of its mean, gid
    ``val_acc:METHOD``, without a band.

    ``epochs`` should hold finished ("done") runs only.
    """
    frame = epochs[epochs["dataset"] == dataset]
    curves, val = curve_frame(frame), _validation_curves(frame)
    if curves.empty:
        raise ValueError(f"no finished epochs for dataset {dataset!r}")
    models = order_models(curves["model"])
    rows = _panel_rows(order_methods(curves["method"]), method_definitions(frame, methods))
    fig, axes = _figure(len(models), len(rows), legend=True, sharex=True, sharey=True)
    drawn = []
    for r, (title, members) in enumerate(rows):
        for c, model in enumerate(models):
            ax = axes[r, c]
            for method in members:
                mine = curves[curves["model"] == model], val[val["model"] == model]
                drawn += _draw_accuracy(ax, *mine, method)
            _validation_key(ax)
            ax.grid(alpha=0.3)
            ax.set_title(f"{model_label(model)}: {title}", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("epoch")
            if c == 0:
                ax.set_ylabel("accuracy (%)" if len(val) else "test acc. (%)")
        _legend(list(axes[r]), axes[r, -1])
    axes[0, 0].set_ylim(*_limits(drawn, 0.0, 100.0))
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    what = "test (solid) and validation (dashed) accuracy" if len(val) else "test accuracy"
    fig.suptitle(f"{dataset_label(dataset)}: {what}, mean of trials ±1 std", fontsize=10)
    return fig


def loss_figure(epochs: pd.DataFrame, dataset: str) -> Figure:
    """Train loss (top row) and test loss (bottom row) over epochs, one column per model: the
    mean over trials with a band of one standard deviation, one line per method (gid
    ``train_loss:METHOD`` / ``test_loss:METHOD``). Linear axis holding every mean and band.

    ``epochs`` should hold finished ("done") runs only.
    """
    frame = epochs[epochs["dataset"] == dataset]
    parts = {
        column: curve_frame(frame[frame[column].notna()], column)
        for column in ("train_loss", "test_loss")
    }
    if all(curves.empty for curves in parts.values()):
        raise ValueError(f"no losses stored for dataset {dataset!r}")
    models = order_models(pd.concat([curves["model"] for curves in parts.values()]))
    methods = order_methods(pd.concat([curves["method"] for curves in parts.values()]))
    fig, axes = _figure(len(models), 2, legend=True, sharex=True, sharey=True)
    drawn = []
    for r, (column, curves) in enumerate(parts.items()):
        for c, model in enumerate(models):
            ax = axes[r, c]
            for method in methods:
                line = curves[(curves["model"] == model) & (curves["method"] == method)]
                if not line.empty:
                    drawn.append(_band(ax, line, method, f"{column}:{method}"))
            ax.grid(alpha=0.3)
            ax.set_title(f"{model_label(model)}: {column.replace('_', ' ')}", fontsize=9)
            if r == 1:
                ax.set_xlabel("epoch")
            if c == 0:
                ax.set_ylabel(f"{column.replace('_', ' ')} (cross-entropy)")
    _legend(list(axes.ravel()), axes[0, -1])
    axes[0, 0].set_ylim(*_limits(drawn, 0.0, np.inf))
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"{dataset_label(dataset)}: loss, mean of trials ±1 std", fontsize=10)
    return fig


def _rate_line(schedule: Schedule, epochs: int, steps_per_epoch: int | None) -> tuple:
    """x (epochs) and the rate of a run of ``epochs``: at every update when
    ``steps_per_epoch`` is known (update k has rate schedule(k / total)), else at
    :data:`LR_POINTS` points of progress."""
    total = epochs * steps_per_epoch if steps_per_epoch else 0
    if 0 < total < MAX_LR_POINTS:
        progress = np.arange(total + 1) / total
    else:
        progress = np.linspace(0.0, 1.0, MAX_LR_POINTS if total else LR_POINTS)
    return progress * epochs, _rates(schedule, progress)


def lr_figure(
    epochs: pd.DataFrame,
    dataset: str,
    methods: Mapping[str, Method] | None = None,
    steps_per_epoch: int | None = None,
) -> Figure:
    """The learning rate of each method, one panel per model, log scale. Lines: the method's
    schedule (:func:`method_definitions`) over its runs' length, per update when
    ``steps_per_epoch`` is given, else at 1001 points (gid ``schedule:METHOD``). Dots: the
    rates the store holds, the rate of each epoch's last update (gid ``stored:METHOD``; the
    only mark of a method whose definition is unknown). For rms/adam it is the base rate."""
    frame = epochs[(epochs["dataset"] == dataset) & epochs["lr"].notna()]
    curves = curve_frame(frame, "lr")
    if curves.empty:
        raise ValueError(f"no learning rates stored for dataset {dataset!r}")
    definitions = method_definitions(frame, methods)
    models = order_models(curves["model"])
    fig, grid = _figure(len(models), 1, legend=True, sharex=True, sharey=True)
    axes, drawn = list(grid[0]), []
    for ax, model in zip(axes, models, strict=True):
        for method in order_methods(curves["method"]):
            line = curves[(curves["model"] == model) & (curves["method"] == method)]
            if line.empty:
                continue
            color, schedule = method_color(method), _schedule_of(definitions[method], model)
            style = "--" if method_group(definitions[method]) == "adaptive" else "-"
            if schedule is not None:
                x, rate = _rate_line(schedule, int(line["epoch"].max()), steps_per_epoch)
                ax.plot(x, rate, style, color=color, lw=1.3, label=method, gid=f"schedule:{method}")
                drawn.append(rate)
            label = f"_{method} stored" if schedule is not None else method
            ax.plot(line["epoch"], line["mean"], "o", ms=2.5, color=color, label=label)
            ax.lines[-1].set_gid(f"stored:{method}")
            drawn.append(line["mean"].to_numpy())
        ax.set_yscale("log")
        ax.set_title(model_label(model))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    values = np.concatenate(drawn)
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size:  # explicit limits: a log axis of one constant rate autoscales badly
        axes[0].set_ylim(positive.min() / 1.6, positive.max() * 1.6)
    axes[0].set_ylabel("learning rate")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(axes, axes[-1])
    fig.suptitle(f"{dataset_label(dataset)}: rates (line: schedule; dot: stored)", fontsize=10)
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
