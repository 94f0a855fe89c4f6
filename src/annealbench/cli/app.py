"""The one Typer application every command module registers itself on.

Every command runs behind one guard: an :class:`~annealbench.errors.AnnealbenchError`
becomes its message on stderr and exit status 2, with no traceback. Anything else is a
bug and keeps its traceback. Also the few things every command shares: the one default
results store (:data:`DEFAULT_STORE`), the report folder next to a store, plurals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from annealbench import __version__
from annealbench.errors import AnnealbenchError

#: The results store of ``run``, ``status``, ``export`` and ``report`` without ``--store``.
DEFAULT_STORE = Path("annealbench.sqlite")


def report_folder(store: Path) -> Path:
    """``report``'s folder without ``--out``: beside the store, named after it without its
    suffix: ``out/results.sqlite`` -> ``out/results-report``."""
    return store.with_name(f"{store.stem}-report")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``0 runs`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a user-facing error (no traceback) and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


class _App(typer.Typer):
    """A Typer app whose commands turn annealbench's own errors into ``error: ...``, exit 2."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
        register = super().command(*args, **kwargs)

        def decorator(func: Callable) -> Callable:
            @functools.wraps(func)
            def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
                try:
                    return func(*call_args, **call_kwargs)
                except AnnealbenchError as exc:
                    raise fail(str(exc)) from None

            register(guarded)
            return func

        return decorator


app = _App(
    name="annealbench",
    help="Learning-rate annealing schedules for SGD, and the study of Nakamura et al. (2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"annealbench {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Learning-rate annealing schedules for SGD, and the study of Nakamura et al. (2021)."""
