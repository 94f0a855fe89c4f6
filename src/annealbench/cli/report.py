"""``annealbench report``: the paper's tables and figures from a results store."""

from __future__ import annotations

from pathlib import Path

import typer

from annealbench.cli.app import DEFAULT_STORE, app, plural, report_folder


@app.command("report")
def report_command(
    store: list[Path] = typer.Option(
        [DEFAULT_STORE],
        "--store",
        help="Results store (SQLite) to read; never changed. Repeat it to report several "
        "stores side by side.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for report.html, CSVs, tables, figures (default: beside the store, "
        "named after it: results.sqlite -> results-report).",
    ),
    study: list[str] = typer.Option(
        [],
        "--study",
        help="Study to report; needed when the store holds several. Repeat it to report "
        "several studies side by side (each model's rows labelled by its study).",
    ),
) -> None:
    """Write the report of a store: tables, paired tests, figures and one report.html.

    A study with a validation split is selected on validation (the best method, the ranks)
    and reported on the test set at the selected points; one without follows the paper's
    protocol, selected and reported on the test set, and the report says so. Rows that
    overlap the paper's cells get a section "Distance to the paper" (distance.csv,
    orderings.csv): per study, dataset and model, the mean absolute difference from the
    paper's aves, the cells within 0.5 points, the Spearman rank correlation and the paper's
    orderings that ours holds; a protocol unlike the paper's is said in its title."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; figures are written to files

    from annealbench.report import report_store

    folder = report_folder(store[0]) if out is None else out
    chosen = None if not study else (study[0] if len(study) == 1 else study)
    written = report_store(store if len(store) > 1 else store[0], folder, study=chosen)
    typer.echo(f"wrote {plural(len(written.files), 'file')} to {written.folder}")
    typer.echo(f"report: {written.html.resolve()}")
