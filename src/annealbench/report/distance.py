"""The section "Distance to the paper": how far each row (study, dataset, model) of the studies
is from the paper's Tables 2 and 3 (:func:`annealbench.report.stats.distance_to_paper`), as
Markdown, HTML and LaTeX tables, with the run options that tell side-by-side studies apart."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from annealbench.report import stats, tables
from annealbench.report.html import Page
from annealbench.report.paper import (
    CITATION,
    dataset_label,
    model_label,
    order_methods,
)
from annealbench.training.config import ADDED_LATER

#: Orderings shown in full up to this many; beyond it only those ours does not hold (all of
#: them stay in orderings.csv).
MAX_ORDERINGS_SHOWN = 60
TITLE = "Distance to the paper"
DIAGNOSTIC = "the protocol differs from the paper's: a diagnostic, not a reproduction"


def _run_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A study's run options, with the values a store leaves out when they are the defaults
    (``input_scaling=standard``, ``weight_decay_on=all``...)."""
    run = settings.get("run") if isinstance(settings.get("run"), dict) else {}
    return {**ADDED_LATER, **run}


def _value(value: object) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def run_options(settings: Mapping[str, Mapping[str, Any]], studies: Sequence[str]) -> dict:
    """Per study of ``studies``: its run options that differ between them, in words
    (``input_scaling=unit, weight_decay_on=weights``); empty when they all agree."""
    runs = {study: _run_of(settings.get(study, {})) for study in dict.fromkeys(studies)}
    keys = sorted({key for run in runs.values() for key in run})
    differing = [key for key in keys if len({_value(run.get(key)) for run in runs.values()}) > 1]
    return {
        study: ", ".join(f"{key}={_value(run.get(key))}" for key in differing)
        for study, run in runs.items()
    }


def with_run_options(
    distance: pd.DataFrame, settings: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """``distance`` with a ``run_options`` column after ``model`` when its studies differ in
    their run options (:func:`run_options`); unchanged otherwise."""
    if distance.empty:
        return distance
    options = run_options(settings, list(distance["study"]))
    if not any(options.values()):
        return distance
    out = distance.copy()
    out.insert(out.columns.get_loc("model") + 1, "run_options", out["study"].map(options))
    return out


def _of(done: int, total: int) -> str:
    return f"{done} of {total}"


def distance_table(distance: pd.DataFrame) -> pd.DataFrame:
    """The distance frame as the report shows it (one row per study, dataset, model)."""
    table: dict[str, object] = {}
    if (distance["study"] != "").any():
        table["study"] = distance["study"]
    table |= {
        "dataset": distance["dataset"].map(dataset_label),
        "model": distance["model"].map(model_label),
    }
    if "run_options" in distance:
        table["run options"] = distance["run_options"]
    table |= {
        "cells": distance["cells"],
        "MAD": distance["mad"],
        f"within {stats.WITHIN_POINTS}": [
            _of(w, c) for w, c in zip(distance["within_0_5"], distance["cells"], strict=True)
        ],
        "Spearman ρ": distance["spearman"],
        "orderings holding": [
            _of(h, n)
            for h, n in zip(distance["orderings_hold"], distance["orderings"], strict=True)
        ],
        "holding and separated": distance["orderings_separated"],
        "note": distance["note"],
    }
    return pd.DataFrame(table).reset_index(drop=True)


def cells_table(summary: pd.DataFrame, distance: pd.DataFrame) -> pd.DataFrame:
    """Ours - the paper's ave per cell (rows: the distance table's rows; columns: methods)."""
    cells = summary[(summary["trials"] > 0) & summary["paper_ave"].notna()].copy()
    if "study" not in cells:
        cells["study"] = ""
    if "base_model" not in cells:
        cells["base_model"] = cells["model"]
    keys = set(zip(distance["study"], distance["dataset"], distance["model"], strict=True))
    mine = [
        key in keys
        for key in zip(cells["study"], cells["dataset"], cells["base_model"], strict=True)
    ]
    cells = cells[mine]
    methods = order_methods(cells["method"])
    rows = {}
    for (study, dataset, model), row in cells.groupby(
        ["study", "dataset", "base_model"], sort=False
    ):
        by_method = dict(zip(row["method"], row["diff_ave"], strict=True))
        label = f"{dataset_label(dataset)} {model_label(model)}" + (
            f" ({study})" if (distance["study"] != "").any() else ""
        )
        rows[label] = [by_method.get(m, float("nan")) for m in methods]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=methods)
    return frame.map(lambda v: "" if pd.isna(v) else f"{round(v, 2) + 0.0:+.2f}")  # no -0.00


def orderings_table(orderings: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the orderings as the report shows them, a sentence on what is shown): all of them up
    to :data:`MAX_ORDERINGS_SHOWN`, else only those ours does not hold."""
    shown, text = orderings, "Every ordering the paper claims in these rows."
    if len(orderings) > MAX_ORDERINGS_SHOWN:
        shown = orderings[~orderings["holds"].astype(bool)]
        text = (
            f"The {len(shown)} of the paper's {len(orderings)} orderings that ours does not hold "
            "(orderings.csv has all of them)."
        )
    table: dict[str, object] = {}
    if (shown["study"] != "").any():
        table["study"] = shown["study"]
    table |= {
        "dataset": shown["dataset"].map(dataset_label),
        "model": shown["model"].map(model_label),
        "paper's claim": [
            f"{b} > {w} ({d:+.2f})"
            for b, w, d in zip(shown["better"], shown["worse"], shown["paper_diff"], strict=True)
        ],
        "ours": [f"{d:+.2f}" for d in shown["our_diff"]],
        "holds": shown["holds"].map(lambda h: "yes" if h else "no"),
        "our paired test": shown["separation"],
    }
    return pd.DataFrame(table).reset_index(drop=True), text


def _caution(distance: pd.DataFrame) -> str:
    """The caution when some rows' protocol differs from the paper's (empty: none does)."""
    differ = distance[distance["protocol_differs"].astype(bool)]
    if differ.empty:
        return ""
    which = "every row" if len(differ) == len(distance) else f"{len(differ)} row(s)"
    return (
        f"Caution: in {which} {DIAGNOSTIC} (see the note column); these distances say how far "
        "those runs are from the published numbers, not whether the paper reproduces."
    )


def section(page: Page, analysis: Any, markdown: list[str], latex: list[str]) -> None:
    """The section "Distance to the paper" on ``page`` and in ``markdown``/``latex``, from the
    analysis' ``distance``, ``orderings`` and ``summary``; nothing when no row of the studies
    overlaps the paper's cells."""
    distance = analysis.distance
    if distance.empty:
        return
    caution = _caution(distance)
    title = TITLE + (f" ({DIAGNOSTIC})" if caution else "")
    page.heading(title, anchor="distance")
    page.paragraph(stats.DISTANCE_DEFINITION, "small")
    markdown += [f"## {title}", "", stats.DISTANCE_DEFINITION, ""]
    if caution:
        page.paragraph(caution, "banner")
        markdown += [f"**{caution}**", ""]
    table = distance_table(distance)
    page.raw(tables.to_html(table, index=False, css_class="results sortable"))
    markdown += [tables.to_markdown(table, False), ""]
    latex.append(
        tables.to_latex(
            table.rename(columns={"Spearman ρ": "Spearman $\\rho$"}),
            caption=f"Distance to the paper ({CITATION})" + (f"; {DIAGNOSTIC}" if caution else ""),
            label="tab:distance",
            index=False,
            escape=True,
        )
    )
    _details(page, analysis, markdown)


def _details(page: Page, analysis: Any, markdown: list[str]) -> None:
    """The per-cell differences and the orderings under the distance table."""
    cells = cells_table(analysis.summary, analysis.distance)
    text = "Ours - the paper's ave, per cell (accuracy points)."
    page.heading("Per cell: ours - paper", level=3)
    page.paragraph(text, "small")
    page.raw(tables.to_html(cells, css_class="results"))
    markdown += ["### Per cell: ours - paper", "", text, "", tables.to_markdown(cells), ""]
    if analysis.orderings.empty:
        line = (
            f"The paper's aves of these rows differ by at most {stats.ORDERING_MARGIN} points: "
            "no ordering to test."
        )
        page.paragraph(line, "small")
        markdown += [line, ""]
        return
    shown, text = orderings_table(analysis.orderings)
    page.heading("The paper's orderings", level=3)
    page.paragraph(text, "small")
    page.raw(tables.to_html(shown, index=False, css_class="results sortable"))
    markdown += ["### The paper's orderings", "", text, "", tables.to_markdown(shown, False), ""]
