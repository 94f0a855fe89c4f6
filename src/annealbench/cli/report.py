"""``annealbench report``: the paper's tables and figures from a results store."""

from __future__ import annotations

from pathlib import Path

import typer

from annealbench.cli.app import DEFAULT_STORE, app, plural, report_folder


@app.command("report")
def report_command(
    store: Path = typer.Option(
        DEFAULT_STORE, "--store", help="Results store (SQLite) to read; never changed."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for report.html, CSVs, tables, figures (default: beside the store, "
        "named after it: results.sqlite -> results-report).",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study to report; needed when the store holds several."
    ),
) -> None:
    """Write the report of a store: tables, paired tests, figures and one report.html."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; figures are written to files

    from annealbench.report import report_store

    written = report_store(store, report_folder(store) if out is None else out, study=study)
    typer.echo(f"wrote {plural(len(written.files), 'file')} to {written.folder}")
    typer.echo(f"report: {written.html.resolve()}")
