"""The one Typer application every command module registers itself on.

Every command runs behind one guard: an :class:`~annealbench.errors.AnnealbenchError`
becomes its message on stderr and exit status 2, with no traceback. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from annealbench.errors import AnnealbenchError


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
