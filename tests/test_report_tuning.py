"""The report of a tuned study (issue 13, item 4): the search's grid (tuning.csv), the
sensitivity figure with the chosen scale marked, the tuned-against-fixed table, the generated
statement and the budget in "What was run"; none of it for an untuned study."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from annealbench.report import load_analysis, report_store
from annealbench.report.tuned import search_grid, sensitivity_figure
from annealbench.store import Store
from annealbench.study import Study, run_study
from annealbench.training.config import TUNING_SEED

EPOCHS = 10
SCALES = (0.5, 1.0, 2.0)
#: (method, scale) -> the validation accuracy of tuning seeds 0 and 1 (None: diverged).
SEARCH = {
    ("sig+", 0.5): (80.0, 82.0),
    ("sig+", 1.0): (85.0, 87.0),
    ("sig+", 2.0): (None, None),
    ("adam", 0.5): (70.0, 72.0),
    ("adam", 1.0): (75.0, 77.0),
    ("adam", 2.0): (88.0, 90.0),
}
CHOSEN = {"sig+": 1.0, "adam": 2.0}
#: Final (and fixed-study) test accuracy of a seed: constant over epochs.
TUNED_TEST = {"sig+": lambda s: 90.0 + s, "adam": lambda s: 91.0 + s}
FIXED_TEST = {"sig+": lambda s: 89.0 + s, "adam": lambda s: 90.0 + 2 * s}
STATEMENT = (
    "At the fixed rates (scale 1 in the search) the best method on validation is sig+ "
    "(86.00%); at tuned rates it is adam (89.00%); methods whose chosen scale is not 1: "
    "adam (x2)."
)


def curve(test: float, val: float | None) -> list[dict[str, float]]:
    out = []
    for epoch in range(1, EPOCHS + 1):
        loss = math.nan if val is None and epoch == 3 else 0.5
        out.append({"epoch": epoch, "lr": 0.1, "train_loss": loss, "train_acc": test,
                    "test_loss": 0.4, "test_acc": test, "val_loss": 0.45,
                    "val_acc": 10.0 if val is None else val, "wall_time": 0.1})  # fmt: skip
        if val is None and epoch == 3:
            break
    return out


def config(method: str, seed: int, scale: float = 1.0) -> dict[str, object]:
    return {"dataset": "mnist", "model": "nn2", "method": method, "seed": seed,
            "epochs": EPOCHS, "validation": 256, "lr_scale": scale}  # fmt: skip


def make_store(path: Path, fixed: bool = False) -> None:
    """Study "tuned": the search of :data:`SEARCH` (2 tuning seeds), then 2 final trials at
    :data:`CHOSEN`; with ``fixed``, an untuned study "fixed" of the same cells too."""
    run = {"epochs": EPOCHS, "validation": 256}
    with Store(path) as store:
        tune = {"scales": list(SCALES), "trials": 2}
        settings = {"datasets": ["mnist"], "models": ["nn2"], "methods": ["sig+", "adam"],
                    "run": run, "trials": 2, "tune": tune}  # fmt: skip
        study = store.ensure_study("tuned", settings)
        for (method, scale), values in SEARCH.items():
            for i, val in enumerate(values):
                status = "diverged" if val is None else "done"
                cfg = config(method, TUNING_SEED + i, scale)
                store.add_result(study, cfg, status, curve(50.0, val))
        for method, scale in CHOSEN.items():
            for seed in (0, 1):
                test = TUNED_TEST[method](seed)
                store.add_result(study, config(method, seed, scale), "done", curve(test, 80.0))
        if fixed:
            other = store.ensure_study("fixed", {**settings, "tune": None})
            for method in CHOSEN:
                for seed in (0, 1):
                    test = FIXED_TEST[method](seed)
                    store.add_result(other, config(method, seed), "done", curve(test, 80.0))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tuned")
    make_store(folder / "s.sqlite")
    report_store(folder / "s.sqlite", folder / "out")
    return folder


def test_tuning_csv_holds_each_methods_scales_computed_by_hand(tuned: Path) -> None:
    csv = pd.read_csv(tuned / "out" / "tuning.csv")
    assert list(csv.columns) == ["dataset", "model", "method", "lr_scale", "val_score", "runs",
                                 "diverged", "chosen"]  # fmt: skip
    assert list(csv["method"]) == ["adam"] * 3 + ["sig+"] * 3  # the paper's order
    assert list(csv["lr_scale"]) == [0.5, 1.0, 2.0] * 2
    expected = [71.0, 76.0, 89.0, 81.0, 86.0, math.nan]
    np.testing.assert_allclose(csv["val_score"], expected)
    assert list(csv["runs"]) == [2] * 6
    assert list(csv["diverged"]) == [0, 0, 0, 0, 0, 2]
    assert list(csv["chosen"]) == [False, False, True, False, True, False]


def test_the_section_states_what_tuning_changes_with_the_table_and_budget(tuned: Path) -> None:
    markdown = (tuned / "out" / "tables.md").read_text()
    html = (tuned / "out" / "report.html").read_text()
    assert "## Tuned against fixed rates" in markdown and "Tuned against fixed rates" in html
    section = markdown.split("## Tuned against fixed rates")[1]
    assert section.lstrip().startswith(f"**{STATEMENT}**")  # the statement opens the section
    assert markdown.index("## Which method is best") < markdown.index("## Tuned against")
    assert "| mnist | nn2 | sig+ | 1.00 | 86.00 | 86.00 | 0.00 | 90.50 |" in section
    assert "| mnist | nn2 | adam | 2.00 | 76.00 | 89.00 | 13.00 | 91.50 |" in section
    budget = (
        "each method: 6 runs of 10 epochs per dataset and model (scales 0.5, 1, 2 x 2 tuning "
        "seed(s)), on the validation split; then 2 final trial(s) at the chosen scale"
    )
    assert f"- **tuning**: {budget}" in markdown  # What was run
    assert "grid 0.5, 1, 2" in section and f"Budget: {budget}." in section  # the caption
    for suffix in ("png", "pdf"):
        assert (tuned / "out" / "figures" / f"sensitivity_mnist.{suffix}").stat().st_size > 0


def test_the_figure_marks_the_chosen_scale_and_crosses_a_diverged_one(tuned: Path) -> None:
    analysis = load_analysis(tuned / "s.sqlite")
    fig = sensitivity_figure(analysis.tuning, "mnist", ["nn2"])
    lines = fig.axes[0].get_lines()
    filled = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in lines
              if ln.get_markersize() == 9]  # fmt: skip
    assert sorted(filled) == [([1.0], [86.0]), ([2.0], [89.0])]
    crosses = [ln for ln in lines if ln.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [2.0]
    assert crosses[0].get_ydata()[0] < 71.0  # at the bottom, below every score


def test_an_untuned_study_beside_it_gets_its_test_ave_and_the_paired_difference(
    tmp_path: Path,
) -> None:
    make_store(tmp_path / "s.sqlite", fixed=True)
    report_store(tmp_path / "s.sqlite", tmp_path / "out", study=["tuned", "fixed"])
    section = (tmp_path / "out" / "tables.md").read_text().split("## Tuned against")[1]
    section = section.split("\n## ")[0]
    assert "fixed test ave" in section and "tuned - fixed" in section
    row = "| mnist | nn2 (tuned) | {} | {} | fixed | {} |"
    assert (
        row.format("sig+", "1.00 | 86.00 | 86.00 | 0.00 | 90.50", "89.50 | 1.00 | 2 | 0") in section
    )
    adam = row.format("adam", "2.00 | 76.00 | 89.00 | 13.00 | 91.50", "91.00 | 0.50 | 2 | 0.5")
    assert adam in section  # diffs 1 and 0 by seed: mean 0.5, paired t-test p = 0.5
    csv = pd.read_csv(tmp_path / "out" / "tuning.csv")
    assert set(csv["model"]) == {"nn2 (tuned)"}  # the untuned study has no search


def test_a_study_without_a_search_has_no_tuning_section(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        study = store.ensure_study("plain", {"run": {"epochs": EPOCHS}, "trials": 2})
        for seed in (0, 1):
            store.add_result(study, config("sig+", seed), "done", curve(90.0, 80.0))
    report_store(tmp_path / "s.sqlite", tmp_path / "out")
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "Tuned against" not in markdown and "**tuning**" not in markdown
    assert not (tmp_path / "out" / "tuning.csv").exists()
    assert not list((tmp_path / "out" / "figures").glob("sensitivity_*"))
    assert search_grid(None, pd.DataFrame()).empty


def test_a_real_small_tuned_study_renders_end_to_end(tmp_path: Path) -> None:
    options = {"epochs": 2, "subset": 1024, "validation": 256, "device": "cpu"}
    grid = Study("tuned", ("fashion-mnist",), ("nn2",), ("sig+", "adam"), 2, options,
                 tune_scales=(0.1, 1.0, 10.0))  # fmt: skip
    store = tmp_path / "s.sqlite"
    run_study(grid, store, progress=False, batched="off")
    files = report_store(store, tmp_path / "out")
    csv = pd.read_csv(tmp_path / "out" / "tuning.csv")
    assert len(csv) == 6 and list(csv["runs"]) == [1] * 6
    with Store(store, readonly=True) as s:
        final = s.runs_frame("tuned")
    for method, rows in csv.groupby("method"):
        assert list(rows.loc[rows["chosen"], "lr_scale"]) == list(
            set(final.loc[final["method"] == method, "lr_scale"])
        )
    markdown = (tmp_path / "out" / "tables.md").read_text()
    assert "At the fixed rates (scale 1 in the search) the best method on validation is" in markdown
    assert "(scales 0.1, 1, 10 x 1 tuning seed(s))" in markdown
    assert tmp_path / "out" / "figures" / "sensitivity_fashionmnist.png" in files.files
    assert "sensitivity to the rate" in files.html.read_text()
