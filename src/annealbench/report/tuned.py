"""The section "Tuned against fixed rates" of a tuned study's report (issue 13, item 4).

A study with ``tune_scales`` stores a search (every method at every scale of the grid, on the
validation split, with tuning seeds; see :mod:`annealbench.tuning`) before its final trials at
each method's chosen scale. From the search's per-run validation scores this module derives
the grid (:func:`search_grid`, written as ``tuning.csv``), the sensitivity figure (validation
score against the scale, as DeepOBS draws it), the table of each method at the fixed rate
(scale 1) and at its tuned rate, and a sentence saying what the tuning changed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from annealbench import tuning
from annealbench.report import figures, stats, tables
from annealbench.report.html import Page
from annealbench.report.paper import dataset_label, order_methods
from annealbench.training.config import TUNING_SEED

__all__ = [
    "GRID_COLUMNS",
    "SEARCH_COLUMNS",
    "budget_text",
    "chosen_scales",
    "comparison_table",
    "concat",
    "search_grid",
    "search_scores",
    "section",
    "sensitivity_figure",
    "statement",
]

SEARCH_COLUMNS = ["study", "dataset", "model", "method", "lr_scale", "seed", "status", "val_score"]
GRID_COLUMNS = ["dataset", "model", "method", "lr_scale", "val_score", "runs", "diverged", "chosen"]
FIXED = 1.0  # the scale of the fixed (untuned) rate: the method's own curve
SECTION = "Tuned against fixed rates"


def search_scores(runs: pd.DataFrame, epochs: pd.DataFrame, study: str) -> pd.DataFrame:
    """One row per search run of ``study`` (runs and epochs read with ``tuning=True``):
    :data:`SEARCH_COLUMNS`, ``val_score`` as :func:`annealbench.tuning.scores` computes it."""
    if runs.empty or not (runs["seed"] >= TUNING_SEED).any():
        return pd.DataFrame(columns=SEARCH_COLUMNS)
    found = tuning.scores(runs, epochs)
    found.insert(0, "study", study)
    return found[SEARCH_COLUMNS]


def concat(searches: list[pd.DataFrame]) -> pd.DataFrame:
    """The search frames of several studies as one (empty ones left out)."""
    found = [s for s in searches if not s.empty]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=SEARCH_COLUMNS)


def search_grid(search: pd.DataFrame | None, runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, method, scale): the mean validation score over the tuning seeds
    (diverged runs left out; NaN when none scored), the search runs, how many diverged, and
    whether it is the cell's chosen scale (:func:`chosen_scales`)."""
    if search is None or search.empty:
        return pd.DataFrame(columns=GRID_COLUMNS)
    keys = [*stats.CELL, "lr_scale"]
    grouped = search.groupby(keys, sort=False)
    grid = grouped["val_score"].mean().rename("val_score").to_frame()
    grid["runs"] = grouped.size()
    grid["diverged"] = grouped["status"].agg(lambda s: int((s == stats.DIVERGED).sum()))
    grid = grid.reset_index()
    chosen = chosen_scales(grid, runs)
    grid["chosen"] = [
        chosen.get(cell) == scale
        for cell, scale in zip(
            grid[stats.CELL].itertuples(index=False, name=None), grid["lr_scale"], strict=True
        )
    ]
    grid = stats.sort_cells(grid.sort_values("lr_scale", kind="stable"))
    return grid.reset_index(drop=True)[GRID_COLUMNS]


def _best_scale(cell: pd.DataFrame) -> float | None:
    """The tuning rule (:func:`annealbench.tuning.best_scale`) on the scales at which no
    run diverged."""
    candidates = cell.loc[cell["diverged"] == 0]
    return tuning.best_scale(
        dict(zip(candidates["lr_scale"], candidates["val_score"], strict=True))
    )


def chosen_scales(grid: pd.DataFrame, runs: pd.DataFrame) -> dict[tuple[str, str, str], float]:
    """Each cell's chosen scale: the ``lr_scale`` of its final runs (seeds below
    :data:`TUNING_SEED`) when the study has them, else the tuning rule on the search."""
    final = runs.loc[runs["seed"] < TUNING_SEED] if "lr_scale" in runs else runs.iloc[:0]
    trained = final.groupby(stats.CELL)["lr_scale"].first().to_dict() if len(final) else {}
    out: dict[tuple[str, str, str], float] = {}
    for cell, rows in grid.groupby(stats.CELL, sort=False):
        scale = trained.get(cell)
        scale = float(scale) if scale is not None else _best_scale(rows)
        if scale is not None:
            out[cell] = scale
    return out


def _value(grid: pd.DataFrame, cell: tuple, scale: float | None) -> float:
    if scale is None:
        return math.nan
    mine = grid[
        (grid["dataset"] == cell[0])
        & (grid["model"] == cell[1])
        & (grid["method"] == cell[2])
        & np.isclose(grid["lr_scale"].astype(float), scale)
    ]
    return float(mine["val_score"].iloc[0]) if len(mine) else math.nan


def _fixed_study_scores(
    analysis: Any, cell: tuple[str, str, str], study: str
) -> tuple[pd.Series, pd.DataFrame]:
    """The summary row of the same dataset, model and method in another, untuned study
    reported side by side (empty when none), and the two studies' per-seed test scores."""
    summary = analysis.summary
    if "study" not in summary or "base_model" not in summary:
        return pd.Series(dtype=object), pd.DataFrame()
    base = stats.base_model(cell[1], study)
    tuned_studies = {s for s, own in analysis.settings.items() if own.get("tune")}
    others = summary[
        (summary["dataset"] == cell[0])
        & (summary["method"] == cell[2])
        & (summary["base_model"] == base)
        & ~summary["study"].isin(tuned_studies)
    ]
    if others.empty:
        return pd.Series(dtype=object), pd.DataFrame()
    other = others.iloc[0]
    scores = analysis.scores
    mine = scores[(scores["dataset"] == cell[0]) & (scores["method"] == cell[2])]
    pairs = mine[mine["model"] == cell[1]][["seed", "score"]].merge(
        mine[mine["model"] == other["model"]][["seed", "score"]], on="seed", suffixes=("", "_f")
    )
    return other, pairs


def _comparison_row(analysis: Any, grid: pd.DataFrame, cell: tuple, chosen: float | None):
    study = _study_of_cell(analysis.runs, cell)
    at_fixed, at_chosen = _value(grid, cell, FIXED), _value(grid, cell, chosen)
    summary = analysis.summary
    own = summary[(summary[stats.CELL] == pd.Series(cell, index=stats.CELL)).all(axis=1)]
    row = {
        "dataset": cell[0],
        "model": cell[1],
        "method": cell[2],
        "chosen scale": math.nan if chosen is None else chosen,
        "val @ x1": at_fixed,
        "val @ chosen": at_chosen,
        "gain": at_chosen - at_fixed,
        "tuned test ave": float(own["ave"].iloc[0]) if len(own) else math.nan,
    }
    other, pairs = _fixed_study_scores(analysis, cell, study)
    if len(other):
        test, _stat, p = stats.paired_test(pairs["score"].to_numpy(), pairs["score_f"].to_numpy())
        diff = float((pairs["score"] - pairs["score_f"]).mean()) if len(pairs) else math.nan
        row |= {
            "fixed study": str(other["study"]),
            "fixed test ave": float(other["ave"]),
            "tuned - fixed": diff,
            "pairs": len(pairs),
            "p": "" if math.isnan(p) else f"{p:.3g}",
        }
    return row


def _study_of_cell(runs: pd.DataFrame, cell: tuple) -> str:
    if "study" not in runs:
        return ""
    mine = runs[(runs[stats.CELL] == pd.Series(cell, index=stats.CELL)).all(axis=1)]
    return str(mine["study"].iloc[0]) if len(mine) else ""


def comparison_table(analysis: Any, grid: pd.DataFrame) -> pd.DataFrame:
    """Per cell: the chosen scale, the search's validation score at scale 1 and at the
    chosen scale, the gain, the final (tuned) test ave; with an untuned study of the same
    cell side by side, its test ave and the paired difference of the test scores by seed."""
    chosen = {
        tuple(key): float(rows.loc[rows["chosen"], "lr_scale"].iloc[0])
        if rows["chosen"].any()
        else None
        for key, rows in grid.groupby(stats.CELL, sort=False)
    }
    rows = [_comparison_row(analysis, grid, cell, scale) for cell, scale in chosen.items()]
    return pd.DataFrame(rows)


def _best(values: dict[str, float]) -> tuple[str, float] | None:
    scored = {k: v for k, v in values.items() if not math.isnan(v)}
    if not scored:
        return None
    name = max(scored, key=lambda k: scored[k])
    return name, scored[name]


def statement(table: pd.DataFrame) -> list[str]:
    """One sentence per (dataset, model) row: the best method on validation at the fixed
    rate (scale 1 in the search) and at the tuned rates, and the methods whose chosen scale
    is not 1."""
    out = []
    rows = list(table.groupby(stats.ROW, sort=False))
    for (dataset, model), cells in rows:
        prefix = f"{dataset_label(dataset)} / {model}: " if len(rows) > 1 else ""
        fixed = _best(dict(zip(cells["method"], cells["val @ x1"], strict=True)))
        tuned = _best(dict(zip(cells["method"], cells["val @ chosen"], strict=True)))
        if fixed is None:
            first = "The search has no score at scale 1 (the fixed rates)"
        else:
            first = (
                "At the fixed rates (scale 1 in the search) the best method on validation is "
                f"{fixed[0]} ({fixed[1]:.2f}%)"
            )
        second = f"at tuned rates it is {tuned[0]} ({tuned[1]:.2f}%)" if tuned else "none scored"
        moved = [
            f"{m} (x{s:g})"
            for m, s in zip(cells["method"], cells["chosen scale"], strict=True)
            if not math.isnan(s) and not math.isclose(s, FIXED)
        ]
        third = (
            "methods whose chosen scale is not 1: " + ", ".join(moved)
            if moved
            else "every method's chosen scale is 1"
        )
        out.append(f"{prefix}{first}; {second}; {third}.")
    return out


def sensitivity_figure(grid: pd.DataFrame, dataset: str, models: list[str]) -> Figure:
    """Validation score against the scale (log x axis), one panel per model of ``dataset``
    and one line per method; the chosen scale a large filled marker, the other scales open
    ones; a scale where every search run diverged a cross at the bottom (a gap in the line)."""
    fig = Figure(figsize=(max(4.2 * len(models), 5.5) + 1.4, 3.6), dpi=figures.DPI)
    axes = fig.subplots(1, len(models), squeeze=False)[0]
    fig.subplots_adjust(left=0.1, right=0.78, top=0.82, bottom=0.16, wspace=0.25)
    for ax, model in zip(axes, models, strict=True):
        mine = grid[(grid["dataset"] == dataset) & (grid["model"] == model)]
        scored = mine["val_score"].dropna()
        low = float(scored.min()) if len(scored) else 0.0
        high = float(scored.max()) if len(scored) else 100.0
        floor = low - max(0.08 * (high - low), 0.5)
        for method in order_methods(list(dict.fromkeys(mine["method"]))):
            _draw_method(ax, mine[mine["method"] == method], method, floor)
        ax.set_xscale("log")
        ax.set_ylim(floor - max(0.04 * (high - low), 0.3), high + max(0.08 * (high - low), 0.5))
        scales = sorted(set(mine["lr_scale"].astype(float)))
        ax.set_xticks(scales, [f"{s:g}" for s in scales])
        ax.minorticks_off()
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("scale of the method's rate curve")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{dataset_label(dataset)}: sensitivity to the rate (search)", fontsize=10)
    return fig


def _draw_method(ax: Any, rows: pd.DataFrame, method: str, floor: float) -> None:
    color = figures.method_color(method)
    x, y = rows["lr_scale"].to_numpy(float), rows["val_score"].to_numpy(float)
    ax.plot(x, y, "-o", color=color, markerfacecolor="white", markersize=5, label=method)
    chosen = rows["chosen"].to_numpy(bool)
    ax.plot(x[chosen], y[chosen], "o", color=color, markersize=9, zorder=3)
    lost = np.isnan(y) & (rows["diverged"].to_numpy(int) > 0)
    if lost.any():
        ax.plot(x[lost], np.full(lost.sum(), floor), "x", color=color, markersize=8, mew=2)


def budget_text(settings: dict[str, Any]) -> str:
    """The search's grid and budget from a study's settings (``settings["tune"]``): ``each
    method: 3 runs of 2 epochs (scales 0.5, 1, 2 x 1 tuning seed)``; empty when untuned."""
    tune = settings.get("tune") if isinstance(settings.get("tune"), dict) else None
    if not tune:
        return ""
    scales, trials = list(tune.get("scales", [])), int(tune.get("trials", 1))
    run = settings.get("run") if isinstance(settings.get("run"), dict) else {}
    epochs = run.get("epochs", settings.get("epochs", "?"))
    return (
        f"each method: {len(scales) * trials} runs of {epochs} epochs per dataset and model "
        f"(scales {', '.join(f'{float(s):g}' for s in scales)} x {trials} tuning seed(s)), "
        f"on the validation split; then {settings.get('trials', '?')} final trial(s) at the "
        "chosen scale"
    )


def _budgets(analysis: Any) -> str:
    found = {study: budget_text(own) for study, own in analysis.settings.items()}
    found = {study: text for study, text in found.items() if text}
    if len(found) > 1:
        return "; ".join(f"{study}: {text}" for study, text in found.items())
    return next(iter(found.values()), "")


def section(
    page: Page, analysis: Any, markdown: list[str], latex: list[str], folder: Path
) -> list[Path]:
    """The section :data:`SECTION` on ``page`` and in ``markdown``/``latex``, its figures in
    ``folder``; returns the files written; nothing when no study of the report has a search."""
    grid = analysis.tuning
    if grid.empty:
        return []
    table = comparison_table(analysis, grid)
    text = (
        "The search trains each method's rate curve times each scale of the grid with tuning "
        f"seeds: {_budgets(analysis)}. val = the mean over the tuning seeds "
        "of the run's mean validation accuracy over its last 10% of epochs (diverged runs "
        "left out); gain = val @ chosen - val @ x1; tuned test ave = the final trials at the "
        "chosen scale. tuning.csv holds every scale."
    )
    tables.table_section(page, markdown, latex, table, title=SECTION, anchor="tuning",
                         notes=statement(table), text=text,
                         caption=f"{SECTION}: {_budgets(analysis)}")  # fmt: skip
    return _figures(page, grid, markdown, folder, _budgets(analysis))


def _figures(
    page: Page, grid: pd.DataFrame, markdown: list[str], folder: Path, budget: str
) -> list[Path]:
    written: list[Path] = []
    for dataset in list(dict.fromkeys(grid["dataset"])):
        models = list(dict.fromkeys(grid.loc[grid["dataset"] == dataset, "model"]))
        stem = "sensitivity_" + "".join(ch for ch in dataset if ch.isalnum())
        png, pdf, data = figures.save(sensitivity_figure(grid, dataset, models), folder, stem)
        written += [png, pdf]
        scales = ", ".join(f"{s:g}" for s in sorted(set(grid["lr_scale"].astype(float))))
        caption = (
            f"{dataset_label(dataset)}: validation score of the search against the scale of "
            f"each method's rate curve (grid {scales}; log axis), one line per method; filled "
            f"marker: the chosen scale; a cross at the bottom: every run diverged. Budget: "
            f"{budget}."
        )
        page.figure(data, f"{dataset_label(dataset)} sensitivity to the rate", caption)
        markdown += [
            f"![{dataset_label(dataset)} sensitivity](figures/{png.name})",
            "",
            caption,
            "",
        ]
    return written
