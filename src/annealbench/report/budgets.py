"""Results at several training budgets (a study's ``budgets``): which method wins at 25% of
the epochs may not win at 100%.

Each budget's finished runs are scored on their own (:func:`stats.run_scores`: the mean over
the last 10% of epochs), averaged per method, and the methods ranked within each dataset,
model and budget by the score the report selects on: validation where the study holds a
split out, test otherwise (the paper's protocol). The report draws accuracy and rank against
budget, one line per method, and writes every point to budgets.csv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from annealbench.report import figures, stats, tables
from annealbench.report.html import Page
from annealbench.report.paper import dataset_label, order_methods

__all__ = ["COLUMNS", "SECTION", "budget_table", "budget_figure", "section", "split"]

COLUMNS = ["dataset", "model", "method", "budget", "epochs", "n", "test_ave", "test_std",
           "val_ave", "selected_on", "rank"]  # fmt: skip
SECTION = "Results against the training budget"


def split(runs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The full-budget runs (what every other table reports) and whether shorter ones exist."""
    if "budget" not in runs:
        return runs, False
    budget = runs["budget"].astype(float)
    return runs[budget == 100.0], bool((budget != 100.0).any())


def budget_table(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, model, method and budget: the finished trials' mean and std of
    the test score, the mean validation score (NaN without a split), and the method's rank
    among the methods at that budget (1 = best, by validation when held out)."""
    rows = []
    for budget, part in runs.groupby(runs["budget"].astype(float)):
        scores = stats.run_scores(part, epochs[epochs["run_id"].isin(part["run_id"])])
        if scores.empty:
            continue
        for (dataset, model, method), cell in scores.groupby(["dataset", "model", "method"]):
            val = cell["val_score"].astype(float)
            rows.append({
                "dataset": dataset, "model": model, "method": str(method),
                "budget": budget, "epochs": int(cell["epochs"].max()), "n": len(cell),
                "test_ave": float(cell["score"].mean()),
                "test_std": float(cell["score"].std(ddof=1)) if len(cell) > 1 else float("nan"),
                "val_ave": float(val.mean()) if val.notna().all() else float("nan"),
            })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS[:-2])
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    validated = table["val_ave"].notna()
    table["selected_on"] = validated.map({True: "validation", False: "test"})
    key = table["val_ave"].where(validated, table["test_ave"])
    table["rank"] = key.groupby([table["dataset"], table["model"], table["budget"]]).rank(
        ascending=False, method="min"
    )
    return table.sort_values(["dataset", "model", "budget", "rank"]).reset_index(drop=True)


def budget_figure(table: pd.DataFrame, dataset: str, model: str) -> Figure:
    """Test accuracy (mean of the trials' last 10%) and rank against budget, one line per
    method: the left panel says how much each method loses when cut short, the right one
    whether the winner changes."""
    fig = Figure(figsize=(9.5, 3.6), dpi=figures.DPI)
    acc, rank = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.08, right=0.8, top=0.84, bottom=0.16, wspace=0.3)
    mine = table[(table["dataset"] == dataset) & (table["model"] == model)]
    budgets = sorted(set(mine["budget"].astype(float)))
    for method in order_methods(list(dict.fromkeys(mine["method"]))):
        rows = mine[mine["method"] == method].sort_values("budget")
        color = figures.method_color(method)
        acc.plot(rows["budget"], rows["test_ave"], "-o", color=color, markersize=4, label=method)
        rank.plot(rows["budget"], rows["rank"], "-o", color=color, markersize=4)
    for ax in (acc, rank):
        ax.set_xticks(budgets, [f"{b:g}%" for b in budgets])
        ax.set_xlabel("budget (share of the full run's epochs)")
        ax.grid(alpha=0.3)
    acc.set_ylabel("test accuracy (%), last 10% mean")
    methods = mine["method"].nunique()
    rank.set_ylim(methods + 0.5, 0.5)
    rank.set_yticks(range(1, methods + 1))
    on = "validation" if (mine["selected_on"] == "validation").all() else "test"
    rank.set_ylabel(f"rank by {on} score (1 = best)")
    acc.legend(loc="upper left", bbox_to_anchor=(2.45, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{dataset_label(dataset)} {model}: accuracy and rank against budget", fontsize=10)
    return fig


def _winners(table: pd.DataFrame) -> list[str]:
    """One line per dataset and model: the best method at each budget."""
    lines = []
    for (dataset, model), cell in table.groupby(["dataset", "model"], sort=False):
        best = [
            f"{b:g}%: {', '.join(part.loc[part['rank'] == 1, 'method'])}"
            for b, part in cell.groupby("budget")
        ]
        lines.append(f"{dataset_label(dataset)} {model}, best by budget: {'; '.join(best)}")
    return lines


def section(
    page: Page, analysis: Any, markdown: list[str], latex: list[str], folder: Path
) -> list[Path]:
    """The section :data:`SECTION` and budgets.csv; nothing without shorter budgets."""
    table = analysis.budgets
    if table.empty:
        return []
    written = [folder.parent / "budgets.csv"]
    table.to_csv(written[0], index=False)
    text = (
        "Every final trial also ran at shorter budgets, each a whole schedule compressed into "
        "its epochs (warmup-stable-decay keeps the full run's warmup and plateau and cools "
        "down over the last 20% of the shorter run). test ave = the trials' mean of their "
        "last-10% test accuracy; rank among the methods at that budget, by validation where "
        "a split is held out. budgets.csv holds every point."
    )
    tables.table_section(page, markdown, latex, table, title=SECTION, anchor="budgets",
                         notes=_winners(table), text=text, caption=SECTION)  # fmt: skip
    for (dataset, model), _ in table.groupby(["dataset", "model"], sort=False):
        stem = "budgets_" + "".join(ch for ch in f"{dataset}_{model}" if ch.isalnum() or ch == "_")
        png, pdf, data = figures.save(budget_figure(table, dataset, model), folder, stem)
        written += [png, pdf]
        caption = (
            f"{dataset_label(dataset)} {model}: left, the test accuracy of each method at each "
            "budget (mean of the trials' last 10% of epochs); right, its rank among the methods "
            "at that budget."
        )
        page.figure(data, f"{dataset_label(dataset)} {model} against budget", caption)
        markdown += [f"![{dataset} {model} budgets](figures/{png.name})", "", caption, ""]
    return written
