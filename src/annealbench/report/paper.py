"""The published numbers: Tables 2 and 3 of Nakamura et al. (2021), and the naming between
the paper and annealbench.

Source: K. Nakamura, B. Derbel, K.-J. Won, B.-W. Hong, "Learning-Rate Annealing Methods for
Deep Neural Networks", Electronics 10(16):2029, 2021. The CSV ships in
``annealbench/reference/paper_accuracy.csv`` (552 cells: 23 rows x 12 methods x {ave, max}).
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
from collections import Counter
from collections.abc import Callable
from importlib import resources

import pandas as pd

from annealbench import methods, models

CITATION = (
    'K. Nakamura, B. Derbel, K.-J. Won, B.-W. Hong, "Learning-Rate Annealing Methods for Deep '
    'Neural Networks", Electronics 10(16):2029, 2021 (Tables 2 and 3).'
)

# The paper's protocol: 10 trials of 100 epochs on the full training set of every dataset.
PAPER_TRIALS = 10
PAPER_EPOCHS = 100


def protocol_differences(
    trials: int, epochs: int, subset: int | None = None, validation: str = ""
) -> list[str]:
    """How a study's protocol differs from the paper's, in words (empty when it is the same).

    ``trials`` and ``epochs`` are the study's (per cell); ``subset`` the number of training
    images when the study used only the first ones; ``validation`` what it held out of the
    training set for validation, in words (``"5,000 examples"``; empty: nothing).
    """
    out = []
    if epochs != PAPER_EPOCHS:
        out.append(f"{epochs} epochs, not the paper's {PAPER_EPOCHS}")
    if subset:
        out.append(f"the first {subset:,} training images, not all of them")
    if validation:
        out.append(f"{validation} held out for validation")
    if trials != PAPER_TRIALS:
        out.append(f"{trials} trials per cell, not the paper's {PAPER_TRIALS}")
    return out


# Figures 2/4 (decay) and 3/5 (warmup) each show one subset of the methods.
DECAY_METHODS: tuple[str, ...] = ("0.1", "exp", "str", "rms", "adam", "sig")
WARMUP_METHODS: tuple[str, ...] = ("sig", "rep", "trap", "str+", "sig+")

# Our dataset name -> the paper's label in its tables, in the paper's order (Table 2 then 3).
# The methods and the models (with their paper labels) come from their own registries.
DATASET_LABELS: dict[str, str] = {
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "svhn": "SVHN",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}
DATASET_ORDER: tuple[str, ...] = tuple(DATASET_LABELS)


def entry_point_models() -> set[str]:
    """Names of models that installed packages provide (loading them imports their code)."""
    return {ep.name for ep in importlib.metadata.entry_points(group=models.ENTRY_POINT_GROUP)}


def model_labels() -> dict[str, str]:
    """Each model's paper label (``densenet121`` -> ``DenseConv``), in the paper's order, and
    models registered in this process by their names. Never imports a user's code: models of
    installed entry points keep their names and import paths are not looked up."""
    plugged = entry_point_models()
    out = {}
    for name in models.names():
        if name in plugged:
            out[name] = name
            continue
        try:
            out[name] = models.spec(name).paper_name
        except ValueError:  # a registry that changed meanwhile
            out[name] = name
    return out


def short_reference(name: str) -> str:
    """A short label for a user's model or dataset reference: ``pkg.nets:build`` ->
    ``nets:build``, ``/data/sets/mine.npz`` -> ``mine.npz``, ``/data/folder/`` -> ``folder``;
    any other name (``nn2``, ``nn2 (quick)``) as it is. Nothing is imported or read."""
    text = str(name)
    study = ""
    if text.endswith(")") and " (" in text:  # a side-by-side label: "ref (study)"
        text, _, rest = text.rpartition(" (")
        study = f" ({rest}"
    if "/" in text or "\\" in text or text.startswith(("~", ".")):
        parts = [p for p in text.replace("\\", "/").split("/") if p]
        return (parts[-1] if parts else text) + study
    module, colon, attr = text.partition(":")
    if colon and attr and module and all(p.isidentifier() for p in module.split(".")):
        return f"{module.rpartition('.')[2]}:{attr}{study}"
    return text + study


def unique_labels(names: object, label: Callable[[str], str]) -> dict[str, str]:
    """``name -> label(name)`` for each distinct name, but the full name wherever two names
    would share a label (two ``nets:build`` of different packages)."""
    unique = list(dict.fromkeys(str(v) for v in names))  # type: ignore[union-attr]
    labels = {name: label(name) for name in unique}
    counts = Counter(labels.values())
    return {name: (text if counts[text] == 1 else name) for name, text in labels.items()}


def dataset_key(name: str) -> str:
    """A spelling-insensitive key: ``fashion_mnist``, ``FashionMNIST`` -> ``fashionmnist``."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


_PAPER_DATASET_BY_KEY = {dataset_key(name): name for name in DATASET_ORDER}


def paper_dataset(name: str) -> str | None:
    """The paper's spelling of a dataset name, or None when the paper did not use it."""
    return _PAPER_DATASET_BY_KEY.get(dataset_key(name))


def dataset_label(name: str) -> str:
    """The paper's display name (``CIFAR-10``), a user dataset's short label
    (:func:`short_reference`: ``mine.npz``), or the name itself."""
    paper = paper_dataset(name)
    return DATASET_LABELS[paper] if paper else short_reference(name)


def model_label(name: str) -> str:
    """The paper's display name of a model (``ResNet-18``), a user model's short label
    (:func:`short_reference`: ``nets:build``), or the name itself."""
    return model_labels().get(name) or short_reference(name)


def ordered(values: object, order: tuple[str, ...], key=lambda v: v) -> list[str]:
    """Unique values sorted by their position in ``order``; the rest after, alphabetically."""
    unique = list(dict.fromkeys(str(v) for v in values))  # type: ignore[union-attr]
    rank = {key(name): i for i, name in enumerate(order)}

    def sort_key(value: str) -> tuple[int, str]:
        return (rank.get(key(value), len(order)), value)

    return sorted(unique, key=sort_key)


def method_order() -> tuple[str, ...]:
    """Every known method: :data:`annealbench.methods.PAPER_METHODS`, then today's baselines
    (:data:`annealbench.methods.MODERN_METHODS`), then user-registered ones."""
    return tuple(methods.names())


def order_methods(values: object) -> list[str]:
    """Methods in the paper's order, then today's baselines, then registered ones, then any
    others alphabetically."""
    return ordered(values, method_order())


def order_models(values: object) -> list[str]:
    """Models in the paper's table order, then any others alphabetically."""
    return ordered(values, tuple(models.names()))


def order_datasets(values: object) -> list[str]:
    """Datasets in the paper's order (Table 2 then Table 3), then any others."""
    return ordered(values, tuple(dataset_key(d) for d in DATASET_ORDER), key=dataset_key)


@functools.cache
def _paper_csv() -> str:
    return (resources.files("annealbench.reference") / "paper_accuracy.csv").read_text("utf-8")


def paper_accuracy() -> pd.DataFrame:
    """The published cells in annealbench's names.

    Columns: dataset (paper spelling, e.g. ``fashion-mnist``), model (ours, e.g. ``densenet121``),
    method, paper_ave, paper_max (percent).
    """
    frame = pd.read_csv(io.StringIO(_paper_csv()), dtype={"method": str})
    from_paper = {label: name for name, label in model_labels().items()}
    unknown = set(frame["model"]) - set(from_paper)
    if unknown:  # the shipped file and the model registry must agree
        raise ValueError(f"paper_accuracy.csv has models without a mapping: {sorted(unknown)}")
    frame["model"] = frame["model"].map(from_paper)
    wide = frame.pivot_table(
        index=["dataset", "model", "method"],
        columns="statistic",
        values="accuracy_percent",
        aggfunc="first",
    )
    wide = wide.rename(columns={"ave": "paper_ave", "max": "paper_max"}).reset_index()
    wide.columns.name = None
    return wide[["dataset", "model", "method", "paper_ave", "paper_max"]]


def attach_paper(frame: pd.DataFrame, model_column: str = "model") -> pd.DataFrame:
    """Add ``paper_ave`` and ``paper_max`` to a frame with dataset, model, method columns.

    Dataset names are matched spelling-insensitively (``fashion_mnist`` = ``fashion-mnist``);
    models by ``model_column`` (a side-by-side summary's ``base_model``: ``nn2`` of the row
    ``nn2 (study)``); cells the paper did not report get NaN.
    """
    paper = paper_accuracy().rename(columns={"model": "_model"})
    paper["_key"] = paper["dataset"].map(dataset_key)
    out = frame.copy()
    out["_key"] = out["dataset"].astype(str).map(dataset_key)
    out["_model"] = out[model_column].astype(str)
    merged = out.merge(
        paper.drop(columns="dataset"), on=["_key", "_model", "method"], how="left", validate="m:1"
    )
    return merged.drop(columns=["_key", "_model"])
