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


# -- a run's rates previewed: a spec or a methods file, over --total-steps updates ------------


def preview_csv(tmp_path, *args):
    out = tmp_path / "preview.csv"
    result = runner.invoke(app, ["schedules", *args, "--csv", str(out)])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(out.open()))


def test_a_spec_with_warmup_gives_the_schedules_own_rate_at_every_update(tmp_path):
    spec = "cosine:lr_up=0.2"
    rows = preview_csv(tmp_path, "--schedule", spec, "--total-steps", "100", "--warmup-steps", "10")
    assert [int(r["step"]) for r in rows] == list(range(100))  # every update, not p = 1
    warmed = schedules.warmup(schedules.get("cosine", lr_up=0.2), 10 / 100)
    plus = schedules.get("cosine+", lr_up=0.2, warmup_fraction=0.1)
    for k, row in enumerate(rows):
        assert float(row[spec]) == warmed(k / 100) == plus(k / 100)
    rates = [float(r[spec]) for r in rows]
    assert rates[0] == pytest.approx(0.02) and rates[9] < 0.2  # 10 updates of warmup ...
    assert rates[10] == schedules.get("cosine", lr_up=0.2)(0.0)  # ... then the schedule's start
    assert rates[9] == pytest.approx(0.02 + 0.18 * 9 / 10, rel=1e-12)


def test_steps_picks_evenly_spaced_updates_and_settings_parse_as_values(tmp_path):
    spec = "str:levels=[0.3,0.03],milestones=[0.5]"
    rows = preview_csv(tmp_path, "--schedule", spec, "--total-steps", "1000", "--steps", "5")
    assert [int(r["step"]) for r in rows] == [0, 250, 500, 749, 999]
    assert [float(r[spec]) for r in rows] == [0.3, 0.3, 0.03, 0.03, 0.03]


def test_a_methods_file_schedule_is_previewed_with_its_settings(tmp_path):
    methods_file = tmp_path / "methods.toml"
    methods_file.write_text(
        '[methods.short-wsd]\noptimizer = "sgd"\nschedule = "wsd"\n'
        "schedule_settings = { lr_up = 0.3, decay_fraction = 0.1 }\n"
    )
    args = ["--methods-file", str(methods_file), "--schedules", "short-wsd,cosine"]
    rows = preview_csv(tmp_path, *args, "--total-steps", "50")
    wsd = schedules.get("wsd", lr_up=0.3, decay_fraction=0.1)
    assert [float(r["short-wsd"]) for r in rows] == [wsd(k / 50) for k in range(50)]
    assert [float(r["cosine"]) for r in rows] == [
        schedules.get("cosine")(k / 50) for k in range(50)
    ]


def test_a_preview_plots_over_updates_and_lists_its_rates(tmp_path):
    out = tmp_path / "preview.png"
    args = ["schedules", "--schedule", "wsd:decay_fraction=0.1", "--total-steps", "200"]
    result = runner.invoke(app, [*args, "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    result = runner.invoke(app, ["schedules", "--schedule", "cosine:lr_up=0.2", "--total-steps",
                                 "100", "--warmup-steps", "10"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cosine:lr_up=0.2: 100 updates, the first 10 warming up: first 0.02, peak 0.2 at " \
        "update 10" in result.output  # fmt: skip


@pytest.mark.parametrize(
    "args,message",
    [
        (["--schedule", "nope"], "--schedule 'nope': unknown schedule 'nope'"),
        (["--schedule", "cosine:lr_up=abc"], "lr_up must be a number, got 'abc'"),
        (["--schedule", "cosine:lr_up"], "'lr_up' is not key=value"),
        (["--schedule", "cosine:kappa=2"], "schedule 'cosine' takes no setting kappa"),
        (["--schedule", "str:levels=3"], "a setting has the wrong kind of value"),
        (["--schedule", "cosine", "--total-steps", "10", "--warmup-steps", "10"],
         "--warmup-steps must be >= 0 and below --total-steps (10), got 10"),
        (["--schedule", "cosine", "--total-steps", "0"], "--total-steps must be >= 1"),
        (["--schedule", "cosine", "--epochs", "5"], "a preview's length is --total-steps"),
        (["--total-steps", "10"], "a preview needs a schedule"),
        (["--methods-file", "nothere.toml", "--schedules", "x"], "nothere.toml does not exist"),
    ],
)  # fmt: skip
def test_a_bad_preview_is_one_clear_error(args, message):
    result = runner.invoke(app, ["schedules", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
