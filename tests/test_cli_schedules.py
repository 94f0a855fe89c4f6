"""``annealbench schedules``: listing, Figure 1 and the CSV export, and their bad input."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from annealbench import schedules
from annealbench.cli import app

runner = CliRunner()


def test_lists_every_schedule_with_a_description():
    result = runner.invoke(app, ["schedules"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == schedules.names()
    assert "sigmoid" in lines[schedules.names().index("sig")]


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_plot_draws_figure_1(tmp_path, suffix, magic):
    out = tmp_path / f"fig1{suffix}"
    result = runner.invoke(app, ["schedules", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


def test_csv_holds_each_schedule_at_n_steps(tmp_path):
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["schedules", "--csv", str(out), "--steps", "5"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    assert float(rows[2]["progress"]) == 0.5
    for name in schedules.names():
        assert float(rows[2][name]) == schedules.get(name)(0.5)
        assert float(rows[4][name]) == schedules.get(name)(1.0)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--plot", "fig.svg"], "needs a .png or .pdf"),
        (["--csv", "x.csv", "--steps", "1"], "--steps must be >= 2"),
        (["--plot", "/proc/nope/fig.png"], "cannot write"),
    ],
)
def test_bad_input(args, message):
    result = runner.invoke(app, ["schedules", *args])
    assert result.exit_code == 2
    assert message in result.output
