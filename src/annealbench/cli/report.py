"""``annealbench report``: the paper's tables and figures from a results store."""

from __future__ import annotations

from pathlib import Path

import typer

from annealbench.cli.app import app


@app.command("report")
def report_command(
    store: Path = typer.Option(
        ..., "--store", help="Results store (SQLite) to read; never changed."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for report.html, CSVs, tables, figures."),
    study: str | None = typer.Option(
        None, "--study", help="Study to report; needed when the store holds several."
    ),
) -> None:
    """Write the report of a store: tables, paired tests, figures and one report.html."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; figures are written to files

    from annealbench.report import report_store

    written = report_store(store, out, study=study)
    typer.echo(f"wrote {len(written.files)} files to {written.folder}")
    typer.echo(f"report: {written.html.resolve()}")
