"""Command-line interface: ``annealbench <command>``.

Each command lives in its own module and registers itself on :data:`app`; importing this
package imports them all. Commands import heavy dependencies (torch, matplotlib) inside
their bodies so ``annealbench --help`` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

from annealbench.cli.app import app

# Command modules; each one defines @app.command() functions.
_COMMAND_MODULES = ("schedules", "train", "lr_find", "study", "report", "bench")

for _name in _COMMAND_MODULES:
    importlib.import_module(f"annealbench.cli.{_name}")


def main() -> None:
    # As `python -m` does: a user's module in the working folder (--models mynets:build)
    # imports, here and in the worker processes, which start with this sys.path.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    app()


__all__ = ["app", "main"]
