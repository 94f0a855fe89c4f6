"""Every ``>>>`` example in annealbench's docstrings runs and prints what it shows.

Modules are picked by their source text (a ``>>>`` in the file), so collection imports only
those with examples: no optional dependency (ray) and no heavy module is imported needlessly,
and a new example anywhere in src/annealbench is run without registering it here.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "annealbench"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


MODULES = modules_with_examples()


def test_the_schedules_example_is_run() -> None:
    assert "annealbench.schedules" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    assert sum(len(test.examples) for test in tests), f"{name}: '>>>' outside any docstring"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out = io.StringIO()
    for test in tests:
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
