"""The report's first section says what was run (study settings and each run's environment);
every cell shows ave ± std [95% CI]; too few trials, too short runs and a protocol unlike the
paper's are said in words, never shown as comparable or significant."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from annealbench.report import build, paper, report_store, stats, tables
from annealbench.store import Store
from test_report_stats import constant_run, frames

ENV = {
    "annealbench": "9.9.9",
    "torch": "2.99.0",
    "python": "3.11.7",
    "device": "cpu",
    "threads": 3,
    "host": "bench-host",
    "git_revision": "0123456789abcdef0123",
}


def make_store(path: Path, epochs: int = 2, seeds: int = 2, subset: int | None = 1000) -> None:
    settings = {
        "datasets": ["fashion-mnist"],
        "models": ["nn2"],
        "methods": ["0.1", "sig+"],
        "trials": seeds,
        "run": {"batch_size": 64, "epochs": epochs, "step_per": "iteration", "subset": subset},
    }
    with Store(path) as store:
        study = store.ensure_study("tiny", settings)
        for method, base in (("0.1", 80.0), ("sig+", 82.0)):
            for seed in range(seeds):
                config = {
                    "dataset": "fashion-mnist",
                    "model": "nn2",
                    "method": method,
                    "seed": seed,
                    "epochs": epochs,
                    "batch_size": 64,
                    "subset": subset,
                    "step_per": "iteration",
                }
                curve = [
                    {"epoch": e, "lr": 0.1, "train_loss": 0.5, "train_acc": 80.0, "test_loss": 0.5}
                    | {"test_acc": base + seed * (1 + (method == "sig+")), "wall_time": 0.1}
                    for e in range(1, epochs + 1)
                ]
                store.add_result(study, config, "done", curve, environment=ENV)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("tiny")
    make_store(folder / "results.sqlite")
    files = report_store(folder / "results.sqlite", folder / "out")
    return {"html": files.html.read_text(), "out": folder / "out"}


def test_the_first_section_says_what_was_run(tiny: dict) -> None:
    html = tiny["html"]
    first = html[: html.index('id="best"')]  # everything before the results
    for fact in (
        "What was run",
        "tiny",
        "Fashion-MNIST",
        "NN-2",
        "0.1, sig+",
        "2 per cell (seeds); the paper ran 10",
        "2 per run; the paper ran 100",
        "<dd>64</dd>",
        "the first 1,000",
        "iteration",
        "annealbench 9.9.9, torch 2.99.0",
        "0123456789ab",
        "cpu; threads 3; host bench-host",
        "first run started",
    ):
        assert fact in first, fact
    assert "<title>annealbench report: study tiny</title>" in html


def test_results_come_before_the_definitions(tiny: dict) -> None:
    html = tiny["html"]
    order = [html.index(f'id="{a}"') for a in ("provenance", "best", "definitions")]
    assert order == sorted(order)
    assert '<nav class="toc">' in html and 'href="#definitions"' in html


def test_a_protocol_unlike_the_papers_is_said_and_no_delta_is_shown(tiny: dict) -> None:
    html = tiny["html"]
    assert "Not the paper&#x27;s protocol: 2 epochs, not the paper&#x27;s 100" in html
    assert "the first 1,000 training images" in html
    assert "Δ ave" not in html and "Not comparable" in html
    assert "diff_ave" in (tiny["out"] / "summary.csv").read_text()  # still in the CSV


def test_small_samples_are_flagged_in_words(tiny: dict) -> None:
    html = tiny["html"]
    assert "2 trials: too few to test" in html
    assert "2 epochs: far from the paper&#x27;s 100" in html
    assert "too few to say it beats the others" in html
    best = pd.read_csv(tiny["out"] / "best.csv", dtype={"best": str})
    assert best.loc[0, "best"] == "sig+"
    assert best.loc[0, "score"] == "83.00 ± 1.41 [70.29, 95.71]"


def test_a_two_trial_t_test_is_never_bold() -> None:
    """The same gain on both seeds gives p = 0 (significant), but 2 pairs are too few."""
    run_frame, epoch_frame = frames(
        [constant_run("exp", s, 90.0 + s) for s in (0, 1)]
        + [constant_run("sig+", s, 91.0 + s) for s in (0, 1)]
    )
    analysis = build.analyze(run_frame, epoch_frame)
    assert analysis.tests["significant"].any()
    for flavor in (tables.MARKDOWN, tables.HTML):
        cell = tables.tests_matrix(analysis.tests, "mnist", "best", flavor).loc["NN-2", "exp"]
        assert "too few to test" in cell and "**" not in cell and "<b>" not in cell


def test_cautions_and_interval_text() -> None:
    assert stats.cautions(2, 2) == [
        "2 trials: too few to test",
        "2 epochs: far from the paper's 100",
    ]
    assert stats.cautions(1, 1) == ["1 trial: too few to test", "1 epoch: far from the paper's 100"]
    assert stats.cautions(5, 10) == []
    cell = {"ave": 90.123, "std": 0.15, "ci_low": 89.9, "ci_high": 90.3}
    assert stats.interval_text(cell) == "90.12 ± 0.15 [89.90, 90.30]"
    assert stats.interval_text({"ave": 90.0, "std": math.nan, "ci_low": math.nan}) == "90.00"


def test_the_papers_protocol_has_no_differences() -> None:
    assert paper.protocol_differences(10, 100, None) == []
    assert paper.protocol_differences(10, 100, 5000) == [
        "the first 5,000 training images, not all of them"
    ]


def test_every_cell_shows_its_spread() -> None:
    run_frame, epoch_frame = frames([constant_run("exp", s, 90.0 + s) for s in range(6)])
    summary = build.analyze(run_frame, epoch_frame).summary
    layout = tables.paper_layout(summary, "mnist", tables.HTML)
    assert "± 1.87 [" in layout.loc[("ave", "NN-2"), "exp"]
    cells = tables.cells_table(summary, "mnist")
    row = cells.iloc[0]
    assert (row["trials"], row["epochs"], row["caution"]) == (6, "10", "")
    assert row["std"] == pytest.approx(1.8708, abs=1e-4) and row["95% CI"].startswith("[")
    # The markdown layout stays the paper's: one number per cell.
    assert tables.paper_layout(summary, "mnist", tables.MARKDOWN).loc[("ave", "NN-2"), "exp"] == (
        "**92.50**"
    )


def test_same_protocol_shows_the_differences(tmp_path: Path) -> None:
    make_store(tmp_path / "r.sqlite", epochs=100, seeds=10, subset=None)
    html = report_store(tmp_path / "r.sqlite", tmp_path / "out").html.read_text()
    assert "Not the paper" not in html and "Δ ave" in html
    assert "trials: too few to test" not in html and "far from the paper" not in html
    assert "significantly better than all 1 others" in html
