"""The published numbers and the tables: the paper's layout, best-of-row marking, diverged and
incomplete markers, the side-by-side with the paper, and the three output formats."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from annealbench import data, methods, models
from annealbench.report import paper, stats, tables
from test_report_stats import constant_run, frames


def summary_of(runs: list[tuple]) -> pd.DataFrame:
    run_frame, epoch_frame = frames(runs)
    return stats.summarize(run_frame, stats.run_scores(run_frame, epoch_frame))


# -- the paper's numbers ----------------------------------------------------------------


def test_the_shipped_tables_hold_every_published_cell() -> None:
    published = paper.paper_accuracy()
    assert len(published) == 552 // 2  # one row per cell with its ave and its max
    assert published[["paper_ave", "paper_max"]].notna().all().all()
    assert set(published["model"]) == set(models.names())
    assert set(published["method"]) == set(methods.PAPER_METHODS)
    cells = published.set_index(["dataset", "model", "method"])
    # Spot checks against the text of Tables 2 and 3.
    assert cells.loc[("mnist", "nn2", "0.1"), "paper_ave"] == 97.87
    assert cells.loc[("fashion-mnist", "lenet4", "str+"), "paper_max"] == 91.72
    assert cells.loc[("svhn", "densenet121", "str+"), "paper_ave"] == 97.01  # DenseConv
    assert cells.loc[("svhn", "googlenet", "sig+"), "paper_ave"] == 97.27
    # max is never below ave in the paper.
    assert (published["paper_max"] >= published["paper_ave"]).all()


def test_dataset_spellings_match_the_paper() -> None:
    assert paper.paper_dataset("fashion_mnist") == "fashion-mnist"
    assert paper.paper_dataset("CIFAR-10") == "cifar10"
    assert paper.paper_dataset("imagenet") is None
    frame = pd.DataFrame({"dataset": ["fashion_mnist", "imagenet"], "model": ["vgg9", "vgg9"]})
    frame["method"] = "exp"
    merged = paper.attach_paper(frame)
    assert merged.loc[0, "paper_ave"] == 93.56 and merged.loc[0, "paper_max"] == 93.82
    assert math.isnan(merged.loc[1, "paper_ave"])


def test_labels_use_the_papers_names() -> None:
    assert paper.model_label("densenet121") == "DenseConv"
    assert paper.model_label("mlp7") == "mlp7"
    assert paper.dataset_label("fashion-mnist") == "Fashion-MNIST"
    assert paper.order_methods(["sig+", "mine", "0.1", "exp"]) == ["0.1", "exp", "sig+", "mine"]


def test_names_and_order_come_from_the_registries() -> None:
    """One source per fact: methods and models from their registries; the report only adds
    the paper's dataset labels, for exactly the data layer's datasets in its order."""
    assert paper.method_order()[:12] == methods.PAPER_METHODS
    assert list(paper.model_labels()) == models.names()
    assert paper.model_label("resnet18") == models.spec("resnet18").paper_name
    assert list(paper.DATASET_ORDER) == data.names()
    assert paper.order_models(["googlenet", "mlp7", "nn2"]) == ["nn2", "googlenet", "mlp7"]
    assert paper.order_datasets(["cifar10", "CIFAR-100", "mnist"]) == [
        "mnist",
        "cifar10",
        "CIFAR-100",
    ]


# -- the paper's layout ------------------------------------------------------------------


def layout_summary() -> pd.DataFrame:
    """mnist: nn2 with exp best on ave (92.5) and str best on max (93.5); vgg9 ties at 99."""
    return summary_of(
        [
            constant_run("exp", 0, 92.4),
            constant_run("exp", 1, 92.6),
            constant_run("str", 0, 91.0),
            constant_run("str", 1, 93.5),
            constant_run("sig+", 0, 91.0),
            ("mnist", "nn2", "sig+", 1, "diverged", [10.0]),
            ("mnist", "nn2", "sig+", 2, "pending", []),
            ("mnist", "nn2", "0.1", 0, "diverged", [10.0]),
            constant_run("exp", 0, 99.0, model="vgg9"),
            constant_run("str", 0, 99.0, model="vgg9"),
        ]
    )


def test_paper_layout_rows_columns_and_best_of_row() -> None:
    table = tables.paper_layout(layout_summary(), "mnist", tables.MARKDOWN)
    assert list(table.columns) == ["0.1", "exp", "str", "sig+"]  # only what ran, paper's order
    assert list(table.index) == [
        ("ave", "NN-2"),
        ("ave", "VGG-9"),
        ("max", "NN-2"),
        ("max", "VGG-9"),
    ]
    assert table.loc[("ave", "NN-2"), "exp"] == "**92.50**"
    assert table.loc[("ave", "NN-2"), "str"] == "92.25"
    assert table.loc[("max", "NN-2"), "str"] == "**93.50**"
    assert table.loc[("max", "NN-2"), "exp"] == "92.60"
    # A tie marks both; a method the row never ran is blank.
    assert table.loc[("ave", "VGG-9"), "exp"] == table.loc[("ave", "VGG-9"), "str"] == "**99.00**"
    assert table.loc[("ave", "VGG-9"), "sig+"] == ""


def test_diverged_and_incomplete_cells_are_flagged() -> None:
    table = tables.paper_layout(layout_summary(), "mnist", tables.MARKDOWN)
    # sig+: one finished (91.0), one diverged, one pending; the diverged run is not averaged in.
    assert table.loc[("ave", "NN-2"), "sig+"] == "91.00†1\\*"
    # 0.1: its only run diverged.
    assert table.loc[("ave", "NN-2"), "0.1"] == "div†1"
    latex = tables.paper_layout(layout_summary(), "mnist", tables.LATEX)
    assert latex.loc[("ave", "NN-2"), "sig+"] == "91.00$^{\\dagger1}$$^{*}$"
    assert latex.loc[("ave", "NN-2"), "exp"] == "\\textbf{92.50}"


def test_a_cell_with_nothing_finished_reads_as_pending() -> None:
    summary = summary_of([constant_run("exp", 0, 90.0), ("mnist", "nn2", "sig", 0, "pending", [])])
    table = tables.paper_layout(summary, "mnist", tables.HTML)
    assert table.loc[("ave", "NN-2"), "sig"] == "…<sup>*</sup>"


def test_side_by_side_has_ours_the_papers_and_the_difference() -> None:
    summary = summary_of(
        [constant_run("sig+", 0, 98.0), constant_run("sig+", 1, 99.0), constant_run("mine", 0, 1.0)]
    )
    compare = tables.side_by_side(summary, "mnist")
    assert compare["method"].tolist() == ["sig+"]  # the paper has no "mine"
    row = compare.iloc[0]
    assert (row["model"], row["trials"]) == ("NN-2", 2)
    assert row["ave"] == 98.5 and row["paper ave"] == 98.55
    assert row["Δ ave"] == pytest.approx(-0.05)
    assert row["max"] == 99.0 and row["paper max"] == 98.65
    assert row["Δ max"] == pytest.approx(0.35)


def test_markdown_latex_and_html_renderings() -> None:
    table = tables.paper_layout(layout_summary(), "mnist", tables.MARKDOWN)
    markdown = tables.paper_markdown(table)
    blocks = markdown.split("\n\n")
    assert blocks[0].splitlines()[0] == "| ave | 0.1 | exp | str | sig+ |"
    assert blocks[1].splitlines()[0] == "| max | 0.1 | exp | str | sig+ |"
    assert "| NN-2 | div†1 | **92.50** | 92.25 | 91.00†1\\* |" in blocks[0]
    latex = tables.to_latex(
        tables.paper_layout(layout_summary(), "mnist", tables.LATEX), caption="c_1", label="t"
    )
    assert "\\begin{table}" in latex and "\\toprule" in latex and "\\caption{c\\_1}" in latex
    assert "\\textbf{92.50}" in latex and "str+" not in latex
    html = tables.to_html(tables.paper_layout(layout_summary(), "mnist", tables.HTML), escape=False)
    assert html.startswith('<div class="scroll"><table class="dataframe results">')
    assert "<b>92.50</b>" in html


def test_tests_matrix_marks_significance_and_the_reference() -> None:
    nan = math.nan
    tests = pd.DataFrame(
        [
            ["mnist", "nn2", "best", "exp", "0.1", 10, -3.0, "wilcoxon", 0.0, 0.002, 0.004, True],
            ["mnist", "nn2", "best", "exp", "str", 10, -0.1, "wilcoxon", 20.0, 0.4, 0.4, False],
            ["mnist", "nn2", "best", "exp", "sig", 1, -0.2, "none", nan, nan, nan, False],
        ],
        columns=["dataset", "model", "against", "reference", "method", "pairs", "diff", "test"]
        + ["statistic", "p_value", "p_holm", "significant"],
    )
    matrix = tables.tests_matrix(tests, "mnist", "best", tables.MARKDOWN)
    assert list(matrix.columns) == ["0.1", "exp", "str", "sig"]
    assert matrix.loc["NN-2"].tolist() == [
        "**-3.00 (p=0.004)**",
        "ref",
        "-0.10 (p=0.4)",
        "-0.20 (n=1)",
    ]
    assert tables.tests_matrix(tests, "mnist", "sig+", tables.MARKDOWN).empty


def test_plain_text_is_escaped_in_html_and_latex() -> None:
    frame = pd.DataFrame({"method": ["<b>x</b>", "a_b & c"], "ave": [1.0, 2.0]})
    html = tables.to_html(frame, index=False)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    latex = tables.to_latex(frame, caption="c", label="t", index=False, escape=True)
    assert "a\\_b \\& c" in latex and "1.00" in latex
