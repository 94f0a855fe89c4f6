"""A study described in one reviewable TOML file: ``annealbench run STUDY.toml``.

The shipped presets are study files too (``annealbench/presets/*.toml``). A file holds::

    name = "my-study"              # the study's name in the store (default: the file's stem)
    description = "what and why"
    datasets = ["./data.npz"]      # names, paths (relative to this file) or package.module:factory
    models = ["nn2", "mynets:build"]
    methods = ["sig+", "cosine", "adam"]   # or [methods.NAME] tables, below
    trials = 2                     # seeds 0..trials-1, paired across methods
    tune_scales = [0.5, 1, 2]      # optional: each method at its own peak rate (tuning.py)

    [run]                          # options every run shares (RunConfig fields)
    epochs = 3
    validation = 0.1               # hold out 10% of the training set (or a count)

    [methods.my-sgd]               # a method defined inline (the methods-file format)
    optimizer = "sgd"
    schedule = "cosine+"

Methods are either a list of names, or ``[methods.NAME]`` tables in the order they run: a
table with fields defines the method, an empty table (``[methods."sig+"]``) names a built-in
or registered one. Datasets likewise: a list of references, or ``[datasets.NAME]`` tables
where ``source = "./faces"`` (and ``augment = ["flip"]``) defines a named user dataset and an
empty table names one. Paths are read relative to the file's folder, and that folder is put
on ``sys.path`` so a model module beside the file imports. The file's text is kept in the
study's settings, so its report shows what was run; rerunning the file resumes the study.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from annealbench.errors import StudyError
from annealbench.study import DEFAULT_TRIALS, Study

__all__ = ["KEYS", "load", "parse"]

#: The top-level keys a study file may hold ([cost] and measured: the presets' listing).
KEYS = ("name", "description", "datasets", "models", "methods", "trials", "run", "cost",
        "measured", "tune_scales", "tune_trials", "budgets")  # fmt: skip


def load(path: str | Path, **overrides: Any) -> Study:
    """The study of the file at ``path``; ``overrides`` (not None) replace its grid or options
    (``datasets``, ``models``, ``methods``, ``trials``, ``name``, or run options)."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise StudyError(f"study file {path} {what}; give a .toml file (see `annealbench run -h`)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"study file {path} cannot be read as UTF-8 text: {exc}") from None
    folder = path.resolve().parent
    if str(folder) not in sys.path:  # a model module beside the file imports
        sys.path.insert(0, str(folder))
    source = {"path": str(path.resolve()), "text": text}
    return parse(text, path.stem, folder, source=source, where=str(path), **overrides)


def parse(
    text: str,
    default_name: str,
    folder: Path | None,
    *,
    source: Mapping[str, str] | None = None,
    where: str = "study file",
    **overrides: Any,
) -> Study:
    """The study a study file's ``text`` describes (paths relative to ``folder``)."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{where} is not valid TOML: {exc}") from None
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise StudyError(f"{where}: unknown keys {unknown}; a study file takes {', '.join(KEYS)}")
    for key in ("datasets", "models"):
        if key not in table and overrides.get(key) is None:
            raise StudyError(f"{where} has no {key} = [...]; list at least one")
    run = table.get("run", {})
    if not isinstance(run, Mapping):
        raise StudyError(f"{where}: [run] must be a table of run options such as epochs = 3")
    grid = {
        "datasets": _datasets(table.get("datasets", ()), folder, where),
        "models": _names(table.get("models", ()), "models", where),
        "methods": _methods(table.get("methods"), where),
        "trials": table.get("trials", DEFAULT_TRIALS),
    }
    options = dict(run)
    given = {
        key: overrides.pop(key, None) for key in ("name", "tune_scales", "tune_trials", "budgets")
    }
    name = given["name"] if given["name"] is not None else table.get("name", default_name)
    tune = {
        key: given[key] if given[key] is not None else table.get(key, default)
        for key, default in (("tune_scales", ()), ("tune_trials", 1), ("budgets", ()))
    }
    tune["tune_scales"] = tuple(tune["tune_scales"])
    if not isinstance(tune["budgets"], list | tuple):
        raise StudyError(f"{where}: budgets must be a list of percentages, e.g. [25, 50, 100]")
    tune["budgets"] = tuple(tune["budgets"])
    for key, value in overrides.items():
        if value is None:
            continue
        if key in grid:
            grid[key] = tuple(value) if key != "trials" else value
        else:
            options[key] = value
    return Study(name=name, options=options, description=table.get("description", ""),
                 source=source, **tune, **grid)  # fmt: skip


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyError(f'{where}: {key} must be a list of names, e.g. {key} = ["nn2"]')
    return tuple(value)


def _datasets(value: Any, folder: Path | None, where: str) -> tuple[str, ...]:
    """Dataset references (paths made relative to the file's folder); tables define."""
    from annealbench import data
    from annealbench.data import sources

    def place(ref: str) -> str:
        if (
            folder is not None
            and sources.looks_like_path(ref)
            and not Path(ref).expanduser().is_absolute()
        ):
            return str(folder / ref)
        return ref

    if isinstance(value, Mapping):
        refs = []
        for name, spec in value.items():
            if not isinstance(spec, Mapping):
                raise StudyError(f"{where}: datasets.{name} must be a table")
            if spec:
                extra = sorted(set(spec) - {"source", "augment"})
                if extra or "source" not in spec:
                    raise StudyError(
                        f'{where}: [datasets.{name}] takes source = "path or module:factory" '
                        f'and augment = ["crop", "flip"]; got {sorted(spec)}'
                    )
                augment = tuple(spec.get("augment", ()))
                data.define(name, place(spec["source"]), augment=augment, replace=True)
            refs.append(name)
        return tuple(refs)
    return tuple(place(ref) for ref in _names(value, "datasets", where))


def _methods(value: Any, where: str) -> tuple[str, ...] | None:
    """Method names; ``[methods.NAME]`` tables with fields are registered first."""
    from annealbench import methods
    from annealbench.errors import MethodError

    if value is None:
        from annealbench.study import paper_methods

        return paper_methods()
    if not isinstance(value, Mapping):
        return _names(value, "methods", where)
    defined = []
    for name, spec in value.items():
        if not isinstance(spec, Mapping):
            raise StudyError(f"{where}: methods.{name} must be a table")
        if spec:
            try:
                if methods.is_builtin(name):
                    raise MethodError(f"{name!r} is built in; give your method another name")
                method = methods.Method.from_config({"name": name, **spec})
                method.validate()
            except MethodError as exc:
                raise StudyError(f"{where}: {exc}") from None
            defined.append(method)
    for method in defined:  # all checked first: a file with one bad method registers none
        methods.register(method, replace=True)
    return tuple(value)
