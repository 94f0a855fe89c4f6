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


def drawn_schedules(monkeypatch) -> list:
    """Record each figure ``annealbench schedules --plot`` draws (the real one, also saved)."""
    from annealbench.report import figures

    drawn, real = [], figures.schedules_figure

    def recording(*args, **kwargs):
        fig = real(*args, **kwargs)
        drawn.append([line.get_gid() for ax in fig.axes for line in ax.get_lines()])
        return fig

    monkeypatch.setattr(figures, "schedules_figure", recording)
    return drawn


def test_plot_draws_every_paper_schedule_by_default(tmp_path, monkeypatch):
    drawn = drawn_schedules(monkeypatch)
    result = runner.invoke(app, ["schedules", "--plot", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    assert drawn == [list(schedules.PAPER_SCHEDULES)]


def test_plot_draws_exactly_the_chosen_schedules(tmp_path, monkeypatch):
    drawn = drawn_schedules(monkeypatch)
    out = tmp_path / "chosen.png"
    args = ["schedules", "--plot", str(out), "--schedules", "cosine, sig+,wsd,cosine"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert drawn == [["cosine", "sig+", "wsd"]]  # in the order given, each once
    assert out.read_bytes().startswith(b"\x89PNG")


def test_chosen_schedules_also_limit_the_listing_and_the_csv(tmp_path):
    result = runner.invoke(app, ["schedules", "--schedules", "sig,cosine"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.strip().splitlines()] == ["sig", "cosine"]
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["schedules", "--csv", str(out), "--schedules", "exp"])
    assert result.exit_code == 0, result.output
    assert list(csv.DictReader(out.open()).fieldnames) == ["step", "progress", "exp"]


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
        (["--plot", "f.png", "--schedules", "sig,bogus"], "unknown schedule(s) bogus"),
        (["--schedules", " , "], "--schedules needs at least one name"),
    ],
)
def test_bad_input(args, message):
    result = runner.invoke(app, ["schedules", *args])
    assert result.exit_code == 2
    assert message in result.output
