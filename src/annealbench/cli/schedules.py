"""``annealbench schedules``: list the schedules, draw Figure 1, or write their values."""

from __future__ import annotations

import csv
from pathlib import Path

import typer

from annealbench import schedules
from annealbench.cli.app import app, fail
from annealbench.training.config import DEFAULT_EPOCHS


@app.command("schedules")
def schedules_command(
    plot: Path | None = typer.Option(
        None, "--plot", help="Draw the paper's Figure 1 to this .png or .pdf file."
    ),
    csv_path: Path | None = typer.Option(
        None, "--csv", help="Write every schedule's rate at --steps evenly spaced steps."
    ),
    steps: int = typer.Option(101, "--steps", help="Points for --csv (from p=0 to p=1)."),
    epochs: int = typer.Option(
        DEFAULT_EPOCHS, "--epochs", help="Length of the run drawn by --plot."
    ),
    chosen: str | None = typer.Option(
        None,
        "--schedules",
        help="Comma-separated names (e.g. sig,sig+,cosine): list, plot or export exactly "
        "these; --plot draws one panel each. Default: list and export all, plot Figure 1.",
    ),
) -> None:
    """List the learning-rate schedules, or plot/export them."""
    names = _chosen_names(chosen)
    if plot is None and csv_path is None:
        width = max(len(n) for n in names or schedules.names())
        for name in names or schedules.names():
            tag = "paper" if name in schedules.PAPER_SCHEDULES else "     "
            typer.echo(f"{name:<{width}}  {tag}  {schedules.describe(name)}")
        return
    if plot is not None:
        if plot.suffix.lower() not in (".png", ".pdf"):
            raise fail(f"--plot needs a .png or .pdf file name, got {plot}")
        if epochs < 1:
            raise fail(f"--epochs must be >= 1, got {epochs}")
        from annealbench.report.figures import schedules_figure

        try:
            plot.parent.mkdir(parents=True, exist_ok=True)
            schedules_figure(epochs, names).savefig(plot)
        except OSError as exc:
            raise fail(f"cannot write {plot}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {plot}")
    if csv_path is not None:
        if steps < 2:
            raise fail(f"--steps must be >= 2 (the first and the last step), got {steps}")
        import numpy as np

        progress = np.linspace(0.0, 1.0, steps)
        columns = {name: schedules.get(name)(progress) for name in names or schedules.names()}
        try:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["step", "progress", *columns])
                for i, p in enumerate(progress):
                    writer.writerow([i, f"{p:.6g}", *(repr(float(v[i])) for v in columns.values())])
        except OSError as exc:
            raise fail(f"cannot write {csv_path}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {csv_path} ({steps} steps x {len(columns)} schedules)")


def _chosen_names(chosen: str | None) -> list[str] | None:
    """The names of ``--schedules a,b,c`` (None when not given); unknown names fail."""
    if chosen is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in chosen.split(",") if n.strip()))
    if not names:
        raise fail("--schedules needs at least one name, e.g. --schedules sig,sig+")
    unknown = [n for n in names if n not in schedules.names()]
    if unknown:
        raise fail(
            f"unknown schedule(s) {', '.join(unknown)} in --schedules; "
            f"valid: {', '.join(schedules.names())}"
        )
    return names
