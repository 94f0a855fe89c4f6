"""The one Typer application every command module registers itself on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="annealbench",
    help="Learning-rate annealing schedules for SGD, and the study of Nakamura et al. (2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user-facing error (no traceback) and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)
