"""The Python API: a study of your own model and data from a notebook or a script.

::

    from annealbench import api

    def build(input_shape, num_classes):          # in a module, or in your script
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    study = api.study(
        "mine",
        datasets={"blobs": (x_train, y_train, x_test, y_test)},   # arrays, paths or names
        models=[build],                                         # factories, paths or names
        methods=["sig+", "cosine", "adam"],                     # names or api.Method(...)
        trials=2, epochs=5, validation=0.1,
    )
    api.run(study, "results.sqlite")      # resumes where an earlier call stopped
    res = api.results("results.sqlite", "mine")
    res.summary                           # one row per (dataset, model, method): ave ± std...
    res.tests                             # paired tests against the best method and sig+

Everything goes through the same study runner, store and statistics as ``annealbench run``
and ``annealbench report``. Arrays are written once to a content-addressed ``.npz`` file
under the data root (``annealbench.data.default_root() / "arrays"``), so every worker
process reads the same data and a rerun finds the study unchanged. A model factory is
stored by its import path (``module:name``, ``__main__`` included for scripts); one that
cannot be imported (a lambda, a function defined in a notebook) is registered in this
process only and trains with the default ``workers=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annealbench.errors import StudyError
from annealbench.methods import Method
from annealbench.study import DEFAULT_TRIALS, Study, StudyOutcome, run_study

if TYPE_CHECKING:  # pragma: no cover
    from annealbench.report import Analysis

__all__ = ["Method", "Study", "results", "run", "study"]

#: What a dataset may be given as: a name or reference, a Dataset object, or four arrays.
DatasetLike = Any


def study(
    name: str,
    *,
    datasets: Iterable[DatasetLike] | Mapping[str, DatasetLike],
    models: Iterable[str | Callable[..., Any]] | Mapping[str, str | Callable[..., Any]],
    methods: Iterable[str | Method] | None = None,
    trials: int = DEFAULT_TRIALS,
    description: str = "",
    **options: Any,
) -> Study:
    """A :class:`~annealbench.study.Study` built from objects.

    ``datasets``: built-in names, references (``./data.npz``, an ImageFolder folder,
    ``module:factory``), :class:`~annealbench.data.Dataset` objects, or a mapping from a name
    to any of those or to four arrays ``(x_train, y_train, x_test, y_test)``. ``models``:
    names, import paths, or factories ``f(input_shape, num_classes) -> nn.Module``; an
    importable factory is known by its import path (so other processes can build it), a
    mapping's name is used for one that cannot be imported. ``methods``: names or
    :class:`Method` objects (default: the paper's 12). ``options``: run options (epochs,
    batch_size, validation, subset, ...).
    """
    from annealbench.study import paper_methods

    dataset_refs = [_dataset(key, value) for key, value in _items(datasets, "dataset")]
    model_refs = [_model(key, value) for key, value in _items(models, "model")]
    method_names = paper_methods() if methods is None else tuple(_method(m) for m in methods)
    return Study(name=name, datasets=tuple(dataset_refs), models=tuple(model_refs),
                 methods=tuple(method_names), trials=trials, options=options,
                 description=description)  # fmt: skip


def run(study: Study, store: str | Path, **how: Any) -> StudyOutcome:
    """Run (or resume) ``study`` into the SQLite file ``store``; ``how``: the options of
    :func:`annealbench.study.run_study` (workers, executor, batched, progress, ...)."""
    return run_study(study, store, **how)


def results(store: str | Path, study: str | None = None) -> Analysis:
    """The results of ``study`` (the store's only study when None) in ``store``, as the
    DataFrames ``annealbench report`` is built from: ``runs``, ``epochs`` (train,
    validation and test per epoch), ``scores`` (per finished run), ``summary`` (per
    dataset, model and method: ave, std, CI; the best chosen on validation where the study
    holds a validation split), ``tests`` (paired tests), ``ranks`` and ``verdicts``."""
    from annealbench.report import load_analysis
    from annealbench.store import Store

    with Store(store, readonly=True) as db:
        names = db.study_names()
        if study is None:
            if len(names) != 1:
                raise StudyError(
                    f"{store} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                    "name one: results(store, study=NAME)"
                )
            study = names[0]
        db.study_id(study)  # a clear error for an unknown name
    return load_analysis(store, study)


# -- turning objects into references --------------------------------------------------------


def _items(given: Any, kind: str) -> list[tuple[str | None, Any]]:
    if isinstance(given, Mapping):
        return [(str(key), value) for key, value in given.items()]
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise StudyError(f"{kind}s must be a list or a mapping of {kind}s, got {given!r}")
    return [(None, value) for value in given]


def _dataset(name: str | None, value: DatasetLike) -> str:
    """A dataset reference the study can store and every worker can load."""
    from annealbench import data

    if isinstance(value, (str, Path)):
        if name is None:
            return str(value)
        return data.define(name, data.canonical(str(value)), replace=True).name
    if isinstance(value, data.Dataset):
        return data.register(value, replace=True).name
    arrays = _four_arrays(value, name)
    if name is None:
        raise StudyError("arrays need a name: give datasets={'mine': (x_train, ...)}")
    path = _arrays_file(arrays)
    return data.define(name, str(path), replace=True).name


def _four_arrays(value: Any, name: str | None) -> tuple[Any, Any, Any, Any]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    if isinstance(value, Mapping) and set(keys) <= set(value):
        return tuple(value[k] for k in keys)  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and len(value) == 4:
        return tuple(value)  # type: ignore[return-value]
    raise StudyError(
        f"dataset {name or value!r}: give a name, a path, a Dataset, or four arrays "
        f"(x_train, y_train, x_test, y_test) as a tuple or a mapping with those keys"
    )


def _arrays_file(arrays: tuple[Any, ...]) -> Path:
    """The content-addressed .npz of ``arrays`` under the data root (written once)."""
    from annealbench import data

    host = [a.detach().cpu().numpy() if hasattr(a, "detach") else a for a in arrays]
    path = data.default_root() / "arrays" / f"{data.fingerprint(*host)[:24]}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        data.save_npz(path, *host)
    return path


def _model(name: str | None, value: str | Callable[..., Any]) -> str:
    """A model reference: a name or import path as given; a factory by its import path,
    or registered in this process under ``name`` (or its own name)."""
    from annealbench import models

    if isinstance(value, str):
        return value
    if not callable(value):
        raise StudyError(f"model {name or value!r}: give a name, an import path or a factory")
    reference = models.reference(value)
    if reference is not None:
        return reference
    label = name or getattr(value, "__name__", None)
    if not label or label == "<lambda>":
        raise StudyError(
            "a model factory that cannot be imported needs a name: models={'mine': factory}"
        )
    models.register(label, value, replace=True)
    return label


def _method(value: str | Method) -> str:
    from annealbench import methods

    if isinstance(value, Method):
        if not methods.is_builtin(value.name):
            methods.register(value, replace=True)
        elif value.to_config() != methods.get(value.name).to_config():
            raise StudyError(
                f"method {value.name!r} is built in and defined otherwise; give your method "
                "another name"
            )
        return value.name
    return str(value)
