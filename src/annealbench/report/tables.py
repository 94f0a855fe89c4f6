"""Tables: the paper's layout (Tables 2 and 3), the published numbers side by side, the paired
tests and the ranks, rendered as Markdown, LaTeX and HTML from one string frame each."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from annealbench.report import stats
from annealbench.report.paper import (
    dataset_label,
    model_label,
    order_methods,
    order_models,
    unique_labels,
)

DIGITS = 2

LEGEND = (
    "Bold: best of the row. †k: k trials diverged (not averaged in). "
    "*: cell incomplete (runs pending, running or failed; see the missing runs). "
    "`div`: every finished trial diverged. `…`: no trial finished yet. Blank: not in this study."
)
VALIDATION_LEGEND = LEGEND.replace(
    "Bold: best of the row.",
    "Bold: the method selected on validation (highest val ave), in every block.",
)
MIXED_LEGEND = LEGEND.replace(
    "Bold: best of the row.",
    "Bold: the method selected in the row (highest val ave under the validation protocol, in "
    "every block; under the paper protocol the best of the block's row). –: no validation "
    "split in this row.",
)
#: The paper layout's blocks: (summary column, block label); the validation protocol's blocks.
PAPER_BLOCKS = (("ave", "ave"), ("max", "max"))
VALIDATION_BLOCKS = (
    ("val_ave", "val ave"),
    ("ave", "test ave"),
    ("test_at_best_val_ave", "test @ best val epoch"),
    ("max", "test max"),
)


@dataclass(frozen=True)
class Flavor:
    """How one output format writes emphasis and markers."""

    bold: Callable[[str], str]
    dagger: Callable[[int], str]
    star: str
    escape: Callable[[str], str]
    newline: str = " "
    spread: bool = False  # also show ± std and the 95% interval under each ave


MARKDOWN = Flavor(lambda s: f"**{s}**", lambda k: f"†{k}", "\\*", lambda s: s)
HTML = Flavor(
    lambda s: f"<b>{s}</b>",
    lambda k: f"<sup>†{k}</sup>",
    "<sup>*</sup>",
    html.escape,
    "<br>",
    spread=True,
)
LATEX = Flavor(
    lambda s: f"\\textbf{{{s}}}",
    lambda k: f"$^{{\\dagger{k}}}$",
    "$^{*}$",
    lambda s: s.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("#", "\\#"),
)


def _number(value: float, digits: int = DIGITS) -> str:
    return (
        ""
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _cell(cell: pd.Series, statistic: str, best: bool, flavor: Flavor) -> str:
    """One table cell: the value (bold if best) with its diverged/incomplete markers."""
    if cell["trials"] > 0 and pd.isna(cell[statistic]):
        text = "–"  # finished, but no such number (no validation split in this row)
    elif cell["trials"] > 0:
        text = _number(cell[statistic])
        text = flavor.bold(text) if best else text
    elif cell["diverged"] > 0:
        text = "div"
    else:
        text = "…"
    if cell["diverged"] > 0:
        text += flavor.dagger(int(cell["diverged"]))
    if cell["missing"] > 0:
        text += flavor.star
    if flavor.spread and statistic == "ave" and cell["trials"] > 1:
        spread = stats.interval_text(cell)[len(_number(cell["ave"])) :].strip()
        text += f'<br><span class="spread">{html.escape(spread)}</span>'
    return text


def validated(summary: pd.DataFrame, dataset: str | None = None) -> bool:
    """Whether any row (of ``dataset``) follows the validation protocol."""
    if "protocol" not in summary:
        return False
    rows = summary if dataset is None else summary[summary["dataset"] == dataset]
    return bool((rows["protocol"] == stats.VALIDATION).any())


def legend(summary: pd.DataFrame, dataset: str) -> str:
    """The legend of :func:`paper_layout` for ``dataset``: :data:`LEGEND` under the paper
    protocol, :data:`VALIDATION_LEGEND` under the validation protocol, else
    :data:`MIXED_LEGEND`."""
    if not validated(summary, dataset):
        return LEGEND
    rows = summary[summary["dataset"] == dataset]
    return VALIDATION_LEGEND if (rows["protocol"] == stats.VALIDATION).all() else MIXED_LEGEND


def _bold(cell: pd.Series, statistic: str, top: float) -> bool:
    """Whether a finished cell is bold: the row's selected cell under the validation
    protocol, else the best of its row in this statistic (ties all bold)."""
    if cell["trials"] <= 0:
        return False
    if cell.get("protocol") == stats.VALIDATION:
        return bool(cell.get("selected", False))
    return bool(math.isclose(cell[statistic], top, abs_tol=1e-9))


def paper_layout(summary: pd.DataFrame, dataset: str, flavor: Flavor) -> pd.DataFrame:
    """One dataset in the layout of Tables 2/3: rows (ave|max, model), columns the methods.

    Only the methods and models of the study appear; the best finished cell of each row
    (highest ``ave`` in the ave block, highest ``max`` in the max block) is bold, ties all bold.
    When a row of the dataset follows the validation protocol the blocks are
    :data:`VALIDATION_BLOCKS` (val ave, test ave, test @ best val epoch, test max) and the
    validation rows' selected method is bold in every block.
    """
    cells = summary[summary["dataset"] == dataset]
    methods = order_methods(cells["method"])
    models = order_models(cells["model"])
    labels = unique_labels(models, model_label)
    by_key = cells.set_index(["model", "method"])
    blocks = {}
    for statistic, name in VALIDATION_BLOCKS if validated(cells) else PAPER_BLOCKS:
        rows = {}
        for model in models:
            row_cells = cells[(cells["model"] == model) & (cells["trials"] > 0)]
            top = row_cells[statistic].max() if len(row_cells) else math.nan
            texts = []
            for method in methods:
                if (model, method) not in by_key.index:
                    texts.append("")
                    continue
                cell = by_key.loc[(model, method)]
                texts.append(_cell(cell, statistic, _bold(cell, statistic, top), flavor))
            rows[flavor.escape(labels[model])] = texts
        blocks[name] = pd.DataFrame.from_dict(rows, orient="index", columns=methods)
    table = pd.concat(blocks, names=[None, None])
    table.columns = [flavor.escape(m) for m in methods]
    return table


def side_by_side(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Ours next to the paper's for every finished cell the paper reported (numbers, not text)."""
    cells = summary[
        (summary["dataset"] == dataset) & (summary["trials"] > 0) & summary["paper_ave"].notna()
    ]
    table = pd.DataFrame(
        {
            "model": cells["model"].map(unique_labels(cells["model"], model_label)),
            "method": cells["method"],
            "trials": cells["trials"].astype(int),
            "ave": cells["ave"],
            "paper ave": cells["paper_ave"],
            "Δ ave": cells["diff_ave"],
            "max": cells["max"],
            "paper max": cells["paper_max"],
            "Δ max": cells["diff_max"],
        }
    )
    return table.reset_index(drop=True)


def tests_matrix(tests: pd.DataFrame, dataset: str, against: str, flavor: Flavor) -> pd.DataFrame:
    """Paired tests of one dataset as rows = models, columns = methods.

    A cell reads ``-0.31 (p=0.004)``: mean difference method - reference over paired trials and
    the Holm-corrected p-value, bold when significant; the reference itself reads ``ref``.
    """
    rows = tests[(tests["dataset"] == dataset) & (tests["against"] == against)]
    if rows.empty:
        return pd.DataFrame()
    methods = order_methods(pd.concat([rows["method"], rows["reference"]]))
    out = {}
    labels = unique_labels(rows["model"], model_label)
    for model in order_models(rows["model"]):
        mine = rows[rows["model"] == model].set_index("method")
        reference = mine["reference"].iloc[0]
        texts = []
        for method in methods:
            if method == reference:
                texts.append("ref")
            elif method not in mine.index:
                texts.append("")
            else:
                t = mine.loc[method]
                if t["test"] == "none":
                    texts.append(f"{t['diff']:+.2f}{flavor.newline}(n={t['pairs']})")
                    continue
                text = f"{t['diff']:+.2f}{flavor.newline}(p={t['p_holm']:.3g})"
                if t["pairs"] < stats.MIN_TRIALS_TO_TEST:  # never bold: too few to trust
                    texts.append(f"{text}{flavor.newline}{flavor.escape(_few(t['pairs']))}")
                    continue
                texts.append(flavor.bold(text) if t["significant"] else text)
        out[flavor.escape(labels[model])] = texts
    return pd.DataFrame.from_dict(out, orient="index", columns=[flavor.escape(m) for m in methods])


def _few(pairs: int) -> str:
    return f"n={pairs}: too few to test"


def _interval(cells: pd.DataFrame) -> list[str]:
    return [
        "" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]"
        for lo, hi in zip(cells["ci_low"], cells["ci_high"], strict=True)
    ]


def cells_table(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Every cell of one dataset as a flat table: trials, epochs, ave ± std [95% CI], max and
    what makes it weak evidence (too few trials, too short runs).

    When a row of the dataset follows the validation protocol: ``selected on``
    (``validation``/``test``), ``val ave``, ``val std``, ``test ave``, ``std``, ``95% CI``,
    ``test @ best val epoch``, ``test max`` (the test columns are the same numbers as ave,
    std, 95% CI and max)."""
    cells = summary[summary["dataset"] == dataset]
    columns: dict[str, object] = {
        "model": cells["model"].map(unique_labels(cells["model"], model_label)),
        "method": cells["method"],
        "trials": cells["trials"].astype(int),
        "epochs": cells["epochs"].map(lambda e: "" if pd.isna(e) else str(int(e))),
    }
    if validated(cells):
        columns |= {
            "selected on": cells["protocol"].map(_selected_on),
            "val ave": cells["val_ave"],
            "val std": cells["val_std"],
            "test ave": cells["ave"],
            "std": cells["std"],
            "95% CI": _interval(cells),
            "test @ best val epoch": cells["test_at_best_val_ave"],
            "test max": cells["max"],
        }
    else:
        columns |= {
            "ave": cells["ave"],
            "std": cells["std"],
            "95% CI": _interval(cells),
            "max": cells["max"],
        }
    columns["caution"] = [
        "; ".join(stats.cautions(int(t), None if pd.isna(e) else int(e)))
        for t, e in zip(cells["trials"], cells["epochs"], strict=True)
    ]
    return pd.DataFrame(columns).reset_index(drop=True)


def _selected_on(protocol: object) -> str:
    return "validation" if protocol == stats.VALIDATION else "test"


def verdict_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The headline: per row, the best method, its ave ± std [95% CI] and how sure that is.

    With a row under the validation protocol: ``selected on``, ``val ave``, ``test ave ± std
    [95% CI]`` and ``test @ best val epoch`` instead of ``ave ± std [95% CI]``."""
    table = {
        "dataset": verdicts["dataset"].map(unique_labels(verdicts["dataset"], dataset_label)),
        "model": verdicts["model"].map(unique_labels(verdicts["model"], model_label)),
        "best": verdicts["best"],
    }
    if "protocol" in verdicts and (verdicts["protocol"] == stats.VALIDATION).any():
        table |= {
            "selected on": verdicts["protocol"].map(_selected_on),
            "val ave": verdicts["val_score"],
            "test ave ± std [95% CI]": verdicts["score"],
            "test @ best val epoch": verdicts["test_at_best_val"],
        }
    else:
        table["ave ± std [95% CI]"] = verdicts["score"]
    table |= {
        "trials": verdicts["trials"],
        "epochs": verdicts["epochs"],
        "certainty": verdicts["verdict"],
        "caution": verdicts["caution"],
    }
    return pd.DataFrame(table)


def paper_markdown(table: pd.DataFrame) -> str:
    """The paper-layout table as the paper prints it: an ``ave`` block, then a ``max`` block,
    each headed by its statistic."""
    blocks = []
    for statistic in table.index.get_level_values(0).unique():
        block = table.loc[statistic]
        block.index.name = None
        blocks.append(to_markdown(block, index=True, corner=statistic))
    return "\n\n".join(blocks)


def format_numbers(frame: pd.DataFrame, digits: int = DIGITS) -> pd.DataFrame:
    """Floats as fixed-point strings (NaN as blank); other columns as they are."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: _number(v, digits))
    return out


def to_markdown(frame: pd.DataFrame, index: bool = True, corner: str = "") -> str:
    """A GitHub-flavoured Markdown table (pipes in cells are escaped); ``corner`` heads the
    index column."""
    frame = format_numbers(frame)
    if index:
        if isinstance(frame.index, pd.MultiIndex):
            labels = [" ".join(str(part) for part in key if part != "") for key in frame.index]
        else:
            labels = [str(key) for key in frame.index]
        frame = frame.copy()
        frame.insert(0, corner, labels)

    def clean(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(clean(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(clean(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body])


def to_latex(
    frame: pd.DataFrame, caption: str, label: str, index: bool = True, escape: bool = False
) -> str:
    """A LaTeX table (booktabs) via pandas. ``escape=False``: cells are LaTeX already (the
    paper layout); ``escape=True``: plain text cells, escaped here."""
    frame = format_numbers(frame)
    if escape:
        frame = frame.map(lambda v: LATEX.escape(v) if isinstance(v, str) else v)
    frame.columns = [LATEX.escape(str(c)) for c in frame.columns]
    return frame.to_latex(
        index=index,
        escape=False,
        caption=LATEX.escape(caption),
        label=label,
        column_format=None,
        multirow=True,
    )


def to_html(
    frame: pd.DataFrame, index: bool = True, escape: bool = True, css_class: str = "results"
) -> str:
    """An HTML table in a scrolling box. ``escape=False`` when the cells are HTML already
    (the paper layout, the test matrices); plain text is escaped."""
    frame = format_numbers(frame)
    table = frame.to_html(index=index, escape=escape, classes=css_class, border=0, na_rep="")
    return f'<div class="scroll">{table}</div>'


def protocol_text(summary: pd.DataFrame, dataset: str | None = None) -> str:
    """Which protocol the rows (of ``dataset``) follow, as one sentence: the paper's
    (:data:`stats.PAPER_PROTOCOL`), the validation protocol (with what was held out), or
    both, each with the rows it applies to."""
    rows = summary if dataset is None else summary[summary["dataset"] == dataset]
    if "protocol" not in rows or rows.empty:
        return stats.PAPER_PROTOCOL[0].upper() + stats.PAPER_PROTOCOL[1:] + "."
    holdout = rows["holdout"] if "holdout" in rows else pd.Series("", index=rows.index)
    parts = []
    for protocol in (stats.VALIDATION, stats.PAPER):
        mine = rows[rows["protocol"] == protocol]
        if mine.empty:
            continue
        if protocol == stats.PAPER:
            text = stats.PAPER_PROTOCOL
        else:
            held = [h for h in dict.fromkeys(holdout[mine.index].fillna("")) if h]
            text = stats.validation_protocol(" or ".join(held))
        if len(set(rows["protocol"])) > 1:
            models = unique_labels(rows["model"], model_label)
            text += " (" + ", ".join(models[m] for m in order_models(mine["model"])) + ")"
        parts.append(text)
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def dataset_caption(dataset: str, summary: pd.DataFrame) -> str:
    """The caption of a paper-layout table: dataset, trials per cell, what ave and max are,
    and the protocol (:func:`protocol_text`)."""
    cells = summary[summary["dataset"] == dataset]
    trials = sorted(set(cells["trials"].astype(int)))
    span = f"{trials[0]}" if len(trials) == 1 else f"{trials[0]}-{trials[-1]}"
    if validated(cells):
        what = (
            f"Accuracy (%) on {dataset_label(dataset)}: val ave = mean over trials of each "
            "run's mean validation accuracy over its last 10% of epochs; test ave = the same on "
            "the test set; test @ best val epoch = mean over trials of the test accuracy at "
            "each run's epoch of best validation accuracy; test max = the best trial's test "
            "score."
        )
    else:
        what = (
            f"Test accuracy (%) on {dataset_label(dataset)}: ave = mean over trials of each "
            "run's mean test accuracy over its last 10% of epochs; max = the best trial's."
        )
    return f"{what} Trials per cell: {span}. {protocol_text(summary, dataset)}"


def table_section(
    page: Any, markdown: list[str], latex: list[str], table: pd.DataFrame, *,
    title: str, anchor: str, notes: list[str], text: str, caption: str,
) -> None:  # fmt: skip
    """A report section of one table, on the page, in markdown and in LaTeX: its heading,
    ``notes`` in bold (the finding), ``text`` (how to read it), then the table."""
    page.heading(title, anchor=anchor)
    markdown += [f"## {title}", ""]
    for line in notes:
        page.paragraph(line, "note")
        markdown += [f"**{line}**", ""]
    page.paragraph(text, "small")
    shown = format_numbers(table)
    page.raw(to_html(shown, index=False, css_class="results sortable"))
    markdown += [text, "", to_markdown(shown, False), ""]
    latex.append(to_latex(shown, caption=caption, label=f"tab:{anchor}", index=False, escape=True))
