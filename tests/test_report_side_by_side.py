"""Several studies of one store, or several stores, reported side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from annealbench.cli import app
from annealbench.errors import ReportError
from annealbench.report import report_store
from annealbench.study import Study, run_study

runner = CliRunner()
OPTIONS = {"epochs": 2, "subset": 256, "device": "cpu"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("side")
    one, two = folder / "one.sqlite", folder / "two.sqlite"
    grid = ("fashion-mnist",), ("nn2",), ("sig+", "adam")
    run_study(Study("short", *grid, 2, OPTIONS), one, progress=False, batched="off")
    run_study(Study("long", *grid, 2, {**OPTIONS, "epochs": 3}), one, progress=False,
              batched="off")  # fmt: skip
    run_study(Study("short", *grid, 2, OPTIONS), two, progress=False, batched="off")
    return one, two


def test_two_studies_of_one_store_side_by_side(stores, tmp_path: Path) -> None:
    one, _ = stores
    with pytest.raises(ReportError, match="several studies.*repeat it"):
        report_store(one, tmp_path / "refused")
    result = runner.invoke(
        app, ["report", "--store", str(one), "--study", "short", "--study", "long",
              "--out", str(tmp_path / "both")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "both" / "summary.csv").read_text()
    assert "nn2 (short)" in summary and "nn2 (long)" in summary
    html = (tmp_path / "both" / "report.html").read_text()
    assert "nn2 (short)" in html and "nn2 (long)" in html


def test_two_stores_side_by_side_label_a_shared_study_name_by_store(stores, tmp_path) -> None:
    one, two = stores
    out = tmp_path / "stores"
    result = runner.invoke(
        app, ["report", "--store", str(one), "--store", str(two), "--study", "short",
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = (out / "summary.csv").read_text()
    assert "nn2 (short@one)" in summary and "nn2 (short@two)" in summary
    # Each store's runs kept apart: 4 runs each, none merged by their per-store run ids.
    scores = (out / "scores.csv").read_text().strip().splitlines()
    assert len(scores) == 1 + 8
