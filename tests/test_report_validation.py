"""Select on validation, report the test set at the selected points (issue 12, item 3).

Hand-made stores: a validation study whose best method on validation (sig) is not the best on
the test set (exp), a paper-protocol study (no validation split), both side by side, and a
study of user workloads whose model and dataset the report must label without importing or
reading anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from annealbench import models
from annealbench.report import (
    analyze,
    figures,
    load_analysis,
    paper,
    report_store,
    stats,
    tables,
)
from annealbench.store import Store
from test_report_provenance import make_store as make_paper_store

EPOCHS = 10
SEEDS = range(6)
METHODS = ("exp", "sig", "sig+")
HELD_OUT = 5000
SOURCE = {
    "path": "/studies/val.toml",
    "text": '[study]\nname = "val"\nmethods = ["exp", "sig", "sig+"]\n# ``` a fence inside\n',
}


def on_test(method: str, seed: int, epoch: int) -> float:
    """exp is best on the test set: its 10-epoch score (the last epoch) is 91 + 0.2 seed."""
    base, slope = {"exp": (90.0, 0.2), "sig": (89.0, 0.25), "sig+": (88.0, 0.22)}[method]
    return base + 0.1 * epoch + slope * seed


def on_validation(method: str, seed: int, epoch: int) -> float:
    """sig is best on validation (last epoch 82 + 0.3 seed), its best epoch is 7; exp's and
    sig+'s validation accuracy rise to their last epoch."""
    if method == "sig":
        return 85.0 - abs(epoch - 7) + 0.3 * seed
    base, slope = {"exp": (80.0, 0.2), "sig+": (79.0, 0.21)}[method]
    return base + 0.1 * epoch + slope * seed


def curve(method: str, seed: int, validation: bool = True) -> list[dict[str, float]]:
    out = []
    for epoch in range(1, EPOCHS + 1):
        record = {"epoch": epoch, "lr": 0.05, "train_loss": 0.5, "train_acc": 95.0}
        record |= {"test_loss": 0.4, "test_acc": on_test(method, seed, epoch), "wall_time": 0.1}
        if validation:
            record |= {"val_loss": 0.45, "val_acc": on_validation(method, seed, epoch)}
        out.append(record)
    return out


def add_study(
    store: Store, name: str, validation: int | None, model: str = "nn2", **extra: object
) -> None:
    dataset = str(extra.pop("dataset", "mnist"))
    run = {"epochs": EPOCHS, "batch_size": 64, "validation": validation}
    settings = {"datasets": [dataset], "models": [model], "methods": list(METHODS)}
    study = store.ensure_study(name, settings | {"trials": len(SEEDS), "run": run} | extra)
    for method in METHODS:
        for seed in SEEDS:
            config = {"dataset": dataset, "model": model, "method": method, "seed": seed}
            config |= {"epochs": EPOCHS, "validation": validation}
            store.add_result(study, config, "done", curve(method, seed, validation is not None))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("validation")
    with Store(folder / "results.sqlite") as store:
        add_study(store, "val", HELD_OUT, source=SOURCE)
        add_study(store, "paper", None)
    return folder


@pytest.fixture(scope="module")
def report(folder: Path) -> dict[str, object]:
    files = report_store(folder / "results.sqlite", folder / "out", study="val")
    out = files.folder
    return {
        "out": out,
        "html": files.html.read_text(),
        "markdown": (out / "tables.md").read_text(),
        "latex": (out / "tables.tex").read_text(),
        "summary": pd.read_csv(out / "summary.csv", dtype={"method": str}),
        "scores": pd.read_csv(out / "scores.csv", dtype={"method": str}),
        "best": pd.read_csv(out / "best.csv", dtype={"best": str}),
    }


VALIDATION_SENTENCE = (
    "alidation protocol: selected on validation (5,000 examples held out), test reported at "
    "the selected points"
)


# -- the numbers ----------------------------------------------------------------------------


def test_the_best_method_is_chosen_on_validation_not_on_test(report: dict) -> None:
    summary = report["summary"].set_index("method")
    # On the test set exp is best (91.5 against sig's 90.625)...
    assert summary.loc["exp", "ave"] == pytest.approx(91.0 + 0.2 * 2.5)
    assert summary.loc["sig", "ave"] == pytest.approx(90.0 + 0.25 * 2.5)
    assert summary["ave"].idxmax() == "exp"
    # ...but sig is best on validation, so it is the row's best.
    assert summary.loc["sig", "val_ave"] == pytest.approx(82.0 + 0.3 * 2.5)
    assert summary.loc["exp", "val_ave"] == pytest.approx(81.0 + 0.2 * 2.5)
    assert set(summary["protocol"]) == {"validation"}
    assert set(summary["holdout"]) == {"5,000 examples"}
    assert summary["selected"].tolist() == [m == "sig" for m in summary.index]
    assert summary["selection"].tolist() == pytest.approx(summary["val_ave"].tolist())
    best = report["best"].iloc[0]
    assert (best["best"], best["protocol"]) == ("sig", "validation")
    assert best["score"].startswith("90.62 ± ")  # its test ave, reported
    tests = pd.read_csv(report["out"] / "paired_tests.csv", dtype={"method": str})
    assert set(tests.loc[tests["against"] == "best", "reference"]) == {"sig"}
    ranks = pd.read_csv(report["out"] / "ranks.csv", dtype={"method": str})
    assert ranks["method"].tolist() == ["sig", "exp", "sig+"]


def test_test_accuracy_at_the_selected_epoch_matches_hand_computation(report: dict) -> None:
    scores = report["scores"].set_index(["method", "seed"])
    for seed in SEEDS:
        sig = scores.loc[("sig", seed)]
        assert sig["best_val_epoch"] == 7
        assert sig["test_at_best_val"] == pytest.approx(89.0 + 0.7 + 0.25 * seed)
        assert sig["val_score"] == pytest.approx(82.0 + 0.3 * seed)  # the last epoch's
        assert sig["score"] == pytest.approx(90.0 + 0.25 * seed)  # test, last epoch
        exp = scores.loc[("exp", seed)]
        assert exp["best_val_epoch"] == 10
        assert exp["test_at_best_val"] == pytest.approx(exp["score"])
    summary = report["summary"].set_index("method")
    assert summary.loc["sig", "test_at_best_val_ave"] == pytest.approx(89.7 + 0.25 * 2.5)
    assert summary.loc["sig", "test_at_best_val_std"] == pytest.approx(
        0.25 * pd.Series(SEEDS).std()
    )


def test_the_selection_score_is_the_mean_of_the_last_tenth_of_validation() -> None:
    # 20 epochs: the last 2 count; the best validation epoch is the first of the ties.
    val = [50.0] * 5 + [90.0, 70.0, 90.0] + [60.0] * 10 + [80.0, 70.0]
    test = [float(e) for e in range(1, 21)]
    runs = pd.DataFrame(
        [[1, "mnist", "nn2", "sig", 0, "done"]],
        columns=["run_id", "dataset", "model", "method", "seed", "status"],
    )
    epochs = pd.DataFrame({"run_id": 1, "epoch": range(1, 21), "test_acc": test, "val_acc": val})
    row = stats.run_scores(runs, epochs).iloc[0]
    assert row["val_score"] == pytest.approx(75.0)
    assert (row["best_val_epoch"], row["test_at_best_val"], row["val_peak"]) == (6, 6.0, 90.0)
    assert row["score"] == pytest.approx(19.5)
    without = stats.run_scores(runs, epochs.drop(columns="val_acc")).iloc[0]
    assert without[stats.VALIDATION_RUN_COLUMNS].isna().all()


def test_holdout_words() -> None:
    assert stats.holdout_text(5000) == "5,000 examples"
    assert stats.holdout_text(0.1) == "10% of the training set"
    assert stats.holdout_text(None) == stats.holdout_text(0) == ""


def test_load_analysis_gives_the_frames_with_the_holdout(folder: Path) -> None:
    analysis = load_analysis(folder / "results.sqlite", "val")
    assert set(analysis.summary["holdout"]) == {"5,000 examples"}
    assert analysis.verdicts.loc[0, "best"] == "sig"
    assert analysis.verdicts.loc[0, "val_score"].startswith("82.75 ± ")
    assert set(analysis.tests["reference"]) == {"sig", "sig+"}


# -- the tables ----------------------------------------------------------------------------


def test_the_tables_show_validation_and_test_columns_and_say_the_protocol(report: dict) -> None:
    markdown, html, latex = report["markdown"], report["html"], report["latex"]
    for heading in ("| val ave | exp | sig | sig+ |", "| test ave | exp | sig | sig+ |"):
        assert heading in markdown
    assert "| test @ best val epoch | exp | sig | sig+ |" in markdown
    for column in ("val ave", "test ave", "test @ best val epoch", "selected on"):
        assert f"<th>{column}</th>" in html
    assert (
        "| dataset | model | best | selected on | val ave | test ave ± std [95% CI] |" in markdown
    )
    assert markdown.count(VALIDATION_SENTENCE) >= 3  # the headline, the layout, every cell
    assert VALIDATION_SENTENCE in html and VALIDATION_SENTENCE in latex
    assert "paper protocol" not in markdown.lower()
    assert stats.TEST_SELECTION_CAUTION not in markdown


def test_the_selected_method_is_bold_in_every_block(folder: Path) -> None:
    with Store(folder / "results.sqlite", readonly=True) as store:
        analysis = analyze(store.runs_frame("val"), store.epochs_frame("val"))
    layout = tables.paper_layout(analysis.summary, "mnist", tables.MARKDOWN)
    assert [block for block, _ in layout.index] == [
        "val ave",
        "test ave",
        "test @ best val epoch",
        "test max",
    ]
    for block in ("val ave", "test ave", "test @ best val epoch", "test max"):
        row = layout.loc[(block, "NN-2")]
        assert row["sig"].startswith("**") and not row["exp"].startswith("**"), block
    cells = tables.cells_table(analysis.summary, "mnist").set_index("method")
    assert cells.loc["sig", "test @ best val epoch"] == pytest.approx(89.7 + 0.25 * 2.5)
    assert cells.loc["sig", "selected on"] == "validation"
    # Without the settings the holdout is unknown, and said so.
    assert "a split of the training set held out" in tables.protocol_text(analysis.summary)


def test_a_paper_protocol_study_says_it_selects_on_test(folder: Path) -> None:
    out = report_store(folder / "results.sqlite", folder / "paper-out", study="paper").folder
    markdown = (out / "tables.md").read_text()
    assert "Paper protocol: selected and reported on the test set." in markdown
    assert "Caution: " + stats.TEST_SELECTION_CAUTION in markdown
    assert "val ave" not in markdown and "alidation protocol" not in markdown
    assert "| ave | exp | sig | sig+ |" in markdown  # the paper's layout, unchanged
    best = pd.read_csv(out / "best.csv", dtype={"best": str})
    assert best.loc[0, "best"] == "exp" and best.loc[0, "protocol"] == "paper"


def test_an_existing_paper_study_keeps_its_numbers(tmp_path: Path) -> None:
    make_paper_store(tmp_path / "r.sqlite")
    out = report_store(tmp_path / "r.sqlite", tmp_path / "out").folder
    best = pd.read_csv(out / "best.csv", dtype={"best": str})
    assert best.loc[0, "best"] == "sig+" and best.loc[0, "score"] == "83.00 ± 1.41 [70.29, 95.71]"
    assert "none: the paper protocol" in (out / "report.html").read_text()


def test_side_by_side_one_study_with_validation_one_without(folder: Path) -> None:
    out = report_store(folder / "results.sqlite", folder / "both", study=["val", "paper"]).folder
    summary = pd.read_csv(out / "summary.csv", dtype={"method": str})
    protocols = summary.groupby("model")["protocol"].first().to_dict()
    assert protocols == {"nn2 (val)": "validation", "nn2 (paper)": "paper"}
    best = pd.read_csv(out / "best.csv", dtype={"best": str}).set_index("model")["best"]
    assert best.to_dict() == {"nn2 (val)": "sig", "nn2 (paper)": "exp"}
    markdown = (out / "tables.md").read_text()
    assert VALIDATION_SENTENCE + " (nn2 (val))" in markdown
    assert "paper protocol: selected and reported on the test set (nn2 (paper))" in markdown
    # The paper study's row has no validation numbers: a dash, not a number or a bold.
    layout = tables.paper_layout(summary, "mnist", tables.MARKDOWN)
    assert layout.loc[("val ave", "nn2 (paper)"), "exp"] == "–"
    assert layout.loc[("test ave", "nn2 (paper)"), "exp"].startswith("**")  # best on test
    assert "val: 5,000 examples held out; paper: none" in (out / "report.html").read_text()


# -- provenance and figures -----------------------------------------------------------------


def test_the_study_file_is_shown_as_run(report: dict) -> None:
    html, markdown = report["html"], report["markdown"]
    assert "/studies/val.toml" in html
    assert '<pre class="source"><code>[study]\nname = &quot;val&quot;' in html
    assert "````toml\n" + SOURCE["text"].rstrip("\n") + "\n````" in markdown
    assert "held out" in html[: html.index('id="best"')]  # the validation line of provenance


def test_accuracy_curves_draw_validation_dashed(folder: Path) -> None:
    with Store(folder / "results.sqlite", readonly=True) as store:
        analysis = analyze(store.runs_frame("val"), store.epochs_frame("val"))
    fig = figures.accuracy_figure(analysis.done_epochs, "mnist")
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert {"test_acc:sig", "val_acc:sig", "val_acc:exp"} <= set(lines)
    assert lines["val_acc:sig"].get_linestyle() == "--"
    assert lines["test_acc:sig"].get_linestyle() == "-"
    assert "validation (dashed)" in fig.texts[0].get_text()


# -- user workloads ----------------------------------------------------------------------------

USER_MODEL = "nosuchmodule_xyz:build"
NESTED_MODEL = "nosuchpkg_xyz.nets:build"
USER_DATA = "/nowhere/xyz/mydata.npz"
DATA_FACTS = {
    "num_classes": 3,
    "input_shape": [8],
    "train_size": 120,
    "test_size": 30,
    "mean": [0.5],
    "std": [0.25],
    "fingerprint": "abcdef0123456789abcdef",
}


def test_user_workloads_render_with_short_labels_and_nothing_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    real_spec = models.spec

    def spec(name: str) -> models.ModelSpec:
        looked_up.append(name)
        return real_spec(name)

    monkeypatch.setattr(models, "spec", spec)
    with Store(tmp_path / "r.sqlite") as store:
        for name, model in (("mine", USER_MODEL), ("nested", NESTED_MODEL)):
            data = {USER_DATA: DATA_FACTS}
            add_study(store, name, 0.2, model=model, dataset=USER_DATA, data=data)
    out = report_store(tmp_path / "r.sqlite", tmp_path / "out", study=["mine", "nested"]).folder
    assert not {"nosuchmodule_xyz", "nosuchpkg_xyz"} & set(sys.modules)
    known = set(models.names())  # built-in (and registered) models: nothing to import
    assert set(looked_up) <= known and USER_MODEL not in known
    html, markdown = (out / "report.html").read_text(), (out / "tables.md").read_text()
    assert "## mydata.npz" in markdown and f"## {USER_DATA}" not in markdown
    assert "| nosuchmodule_xyz:build (mine) |" in markdown
    assert "| nets:build (nested) |" in markdown
    assert f"nets:build = {NESTED_MODEL}" in html and f"mydata.npz = {USER_DATA}" in html
    assert "20% of the training set held out" in markdown
    assert "<td>abcdef0123456789</td>" in html and "<td>(8)</td>" in html  # the data table
    best = pd.read_csv(out / "best.csv", dtype={"best": str})
    assert set(best["best"]) == {"sig"}


def test_short_labels_of_user_references() -> None:
    assert paper.model_label("pkg.sub.nets:build") == "nets:build"
    assert paper.model_label(USER_MODEL) == USER_MODEL
    assert paper.dataset_label("/data/sets/mine.npz") == "mine.npz"
    assert paper.dataset_label("/data/folder/") == "folder"
    assert paper.dataset_label("cifar10") == "CIFAR-10" and paper.model_label("nn2") == "NN-2"
    labels = paper.unique_labels(["a.nets:build", "b.nets:build", "c.x:y"], paper.model_label)
    assert labels == {"a.nets:build": "a.nets:build", "b.nets:build": "b.nets:build"} | {
        "c.x:y": "x:y"
    }


def test_methods_are_ordered_paper_then_modern_then_users() -> None:
    order = paper.order_methods(["zzz-mine", "cosine", "sig+", "0.1"])
    assert order == ["0.1", "sig+", "cosine", "zzz-mine"]
    assert figures.method_color("cosine") not in {
        figures.method_color(m) for m in ("0.1", "exp", "sig", "sig+", "str+", "rep", "trap")
    }
