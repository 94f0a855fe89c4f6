"""Datasets, loaded once into normalized tensors on the training device: the paper's five
(Table 1), and a user's own.

Each dataset is one :class:`Dataset` object in :data:`REGISTRY` (see
:mod:`annealbench.data.datasets`): adding a dataset is registering an object, and nothing here
looks at a dataset's name. The built-in ones are read through torchvision's dataset classes, in
torchvision's on-disk layout under a data root, so an existing torchvision data folder works as
is. There is no DataLoader: a dataset is four tensors, and augmentation is batched tensor code
driven by an explicit ``torch.Generator``, so a run's batches are reproducible from its seed (the
airbench approach).

Missing files are filled in from, in order: Debian's packaged copy (``dataset-fashion-mnist``, a
local copy of the same files, so no network is needed), then torchvision's download. Everything is
written to a temporary name first and renamed into place, so no half-written file is left behind.

A user's dataset: everywhere a dataset name is accepted, a *reference* is too
(:mod:`annealbench.data.sources`):

- a ``.npz`` file of the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``;
- a folder with ``train/`` and ``test/`` subfolders in torchvision's ImageFolder layout (one
  subfolder of images per class);
- an import path ``package.module:function``, the function returning those four arrays;
- a name in the entry-point group ``annealbench.datasets`` of an installed package.

A string is a path when it names an existing file or folder, ends in ``.npz``, contains ``/``
or starts with ``.`` or ``~``; an import path when it is ``a.b.c:name`` of identifiers; else a
name (registered names come first). :func:`canonical` makes paths absolute, so other processes
find them. A user's inputs may be images or rows of features (tabular data: ``input_shape`` is
``(F,)``); their layouts, the label rules and the normalization (statistics of the training
split as given, before any subset or validation split) are in :mod:`annealbench.data.arrays`.
A user's dataset has no augmentation unless :func:`define` gives it a name with some;
:meth:`Dataset.to_config` and :func:`from_config` carry such a definition to another process.

``load(..., validation=N or fraction)`` holds training examples out as a validation split,
chosen by :data:`VALIDATION_SEED` alone (never by a run's seed), so every run of a dataset is
validated on the same examples.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from annealbench.data import sources, user
from annealbench.data.arrays import KEYS, as_numpy, prepare
from annealbench.data.datasets import (
    CROP_PADDING,
    TABLE_1,
    Arrays,
    CifarDataset,
    Dataset,
    IdxDataset,
    SvhnDataset,
    TorchvisionDataset,
)
from annealbench.data.user import AUGMENTATIONS, UserDataset
from annealbench.errors import ConfigError, DataError

__all__ = [
    "AUGMENTATIONS",
    "CROP_PADDING",
    "REGISTRY",
    "VALIDATION_SEED",
    "Arrays",
    "CifarDataset",
    "DataError",
    "Dataset",
    "DeviceData",
    "IdxDataset",
    "SvhnDataset",
    "TorchvisionDataset",
    "UserDataset",
    "canonical",
    "clear_cache",
    "default_root",
    "define",
    "fingerprint",
    "from_config",
    "load",
    "names",
    "register",
    "save_npz",
    "spec",
    "validation_size",
    "SCALINGS",
]

# Every dataset by name, Table 1's first; the one place a name leads to a dataset.
REGISTRY: dict[str, Dataset] = {dataset.name: dataset for dataset in TABLE_1}

#: Input scalings :func:`load` offers: per-channel mean/std, or [0, 1].
SCALINGS = ("standard", "unit")

# The seed that picks the validation examples: fixed, and independent of every run's seed.
VALIDATION_SEED = 20240917

# A dataset, or what leads to one: a name or a reference (a path may be a Path).
DatasetRef = str | os.PathLike[str] | Dataset


@dataclass(frozen=True)
class DeviceData:
    """A whole dataset on one device: float32 normalized inputs (N×C×H×W images or N×F rows),
    int64 labels; ``val_x``/``val_y`` the validation split held out of the training examples
    (None without one).

    Shared between callers through the per-process cache: treat the tensors as read-only.
    """

    spec: Dataset
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None


def names() -> list[str]:
    """The registered dataset names: the paper's Table 1 in order, then registered ones."""
    return list(REGISTRY)


def spec(name: DatasetRef) -> Dataset:
    """The dataset a name or reference leads to (a :class:`Dataset` is returned as it is, a
    user's read afresh if its file changed). A reference's arrays are read and checked once
    per process (again when the file is edited): DataError for bad data; ConfigError listing
    the valid names for an unknown name."""
    ref = os.fspath(name) if isinstance(name, os.PathLike) else name
    if isinstance(ref, UserDataset):
        return ref.current()
    if isinstance(ref, Dataset):
        return ref
    if isinstance(ref, str):
        found = REGISTRY.get(ref)
        if found is not None:
            return refreshed(ref, found)
        kind = sources.reference_kind(ref)
        if kind == sources.PATH:
            source = sources.absolute(ref)
            return user.build(source, kind, source)
        if kind == sources.IMPORT:
            return user.build(ref, kind, ref)
        if ref in sources.entry_points():
            return from_entry_point(ref)
    raise ConfigError(unknown_message(name))


def refreshed(name: str, dataset: Dataset) -> Dataset:
    """A registered dataset, re-registered read afresh if it is a user's whose file changed."""
    if not isinstance(dataset, UserDataset):
        return dataset
    current = dataset.current()
    if current is not dataset:
        REGISTRY[name] = current
    return current


def from_entry_point(name: str) -> Dataset:
    """Register, under ``name``, what its entry point loads: a Dataset, or a function whose
    four arrays make a user's dataset."""
    loaded = sources.load_entry_point(name)
    if isinstance(loaded, Dataset):
        dataset: Dataset = dataclasses.replace(loaded, name=name)
    elif callable(loaded):
        dataset = user.build(name, sources.NAME, name)
    else:
        raise DataError(
            f"{sources.describe(sources.NAME, name)} loads a {type(loaded).__name__}; point it "
            f"at a Dataset object or at a function that returns the four arrays"
        )
    REGISTRY[name] = dataset
    return dataset


def unknown_message(name: Any) -> str:
    valid = list(dict.fromkeys([*names(), *sorted(sources.entry_points())]))
    return (
        f"unknown dataset {name!r}; valid datasets: {', '.join(valid)}; or give a reference "
        f"to your own data: {sources.FORMS}"
    )


def canonical(ref: str | os.PathLike[str]) -> str:
    """The form of a dataset reference to store and hand to other processes: registered
    names and import paths as they are, file and folder paths absolute and resolved (so a
    worker in another working directory finds them). Nothing is read."""
    text = os.fspath(ref) if isinstance(ref, os.PathLike) else ref
    if not isinstance(text, str):
        raise ConfigError(f"a dataset is a name or a reference string, got {ref!r}")
    if text in REGISTRY or sources.reference_kind(text) != sources.PATH:
        return text
    return sources.absolute(text)


def register(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Make ``dataset`` loadable by its name (in this process)."""
    current = REGISTRY.get(dataset.name)
    if current is not None and current != dataset and not replace:
        raise ConfigError(
            f"a different dataset named {dataset.name!r} is already registered; choose another "
            f"name, or pass replace=True to replace it"
        )
    REGISTRY[dataset.name] = dataset
    return dataset


def define(
    name: str,
    source: str | os.PathLike[str],
    *,
    augment: Iterable[str] = (),
    replace: bool = False,
) -> Dataset:
    """Register a user's dataset called ``name``, read from the reference ``source``, with the
    augmentations ``augment`` (a subset of ``("crop", "flip")``; none by default). The data is
    read and checked first: nothing is registered if it is bad. Defining the same name again
    with the same source and augmentation is no conflict (a changed file is read afresh); a
    different definition needs ``replace=True``. Table 1's names cannot be redefined."""
    check_name(name)
    augmentation = augmentations(augment)
    kind, resolved = definition_source(source)
    dataset = user.build(name, kind, resolved, augmentation)
    existing = REGISTRY.get(name)
    if existing is not None and existing.to_config() != dataset.to_config() and not replace:
        raise ConfigError(
            f"a different dataset named {name!r} is already registered; choose another name, "
            f"or pass replace=True to replace it"
        )
    REGISTRY[name] = dataset
    return dataset


def check_name(name: Any) -> None:
    """A name :func:`define` can give: a plain name, not a reference nor a built-in's."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ConfigError(
            f"a dataset name is a non-empty string without spaces around it, got {name!r}"
        )
    if any(name == dataset.name for dataset in TABLE_1):
        raise ConfigError(f"{name!r} is a built-in dataset; give your dataset another name")
    if sources.looks_like_path(name) or sources.IMPORT_PATH.fullmatch(name):
        raise ConfigError(
            f"dataset name {name!r} looks like a path or an import path; give a plain name "
            f"(such as my-data) and the reference as the source"
        )


def augmentations(augment: Iterable[str] | str) -> tuple[str, ...]:
    """``augment`` as a sub-tuple of :data:`AUGMENTATIONS`; ConfigError naming the valid ones."""
    asked = [augment] if isinstance(augment, str) else list(augment)
    unknown = [a for a in asked if a not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"unknown augmentation {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(AUGMENTATIONS)} (or none)"
        )
    return tuple(a for a in AUGMENTATIONS if a in asked)


def definition_source(source: Any) -> tuple[str, str]:
    """(kind, canonical source) of what :func:`define` reads: a reference, an entry point
    that gives a function, or the name of another user's dataset (its source)."""
    text = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(text, str):
        raise ConfigError(f"a dataset source is a reference string, got {source!r}")
    registered = REGISTRY.get(text)
    if registered is None and sources.reference_kind(text) == sources.NAME:
        if text not in sources.entry_points():
            raise ConfigError(unknown_message(text))
        registered = from_entry_point(text)
    if isinstance(registered, UserDataset):
        return registered.kind, registered.source
    if registered is not None:
        raise ConfigError(
            f"{text!r} is a dataset read from its own files; define() reads a user's arrays "
            f"from {sources.FORMS}"
        )
    kind = sources.reference_kind(text)
    return kind, canonical(text)


def from_config(config: Mapping[str, Any]) -> Dataset:
    """The dataset :meth:`Dataset.to_config` described, rebuilt in this process (and
    registered under its name, replacing an earlier user definition: the config is what the
    run was made with)."""
    if not isinstance(config, Mapping) or set(config) != {"name", "source", "augment"}:
        raise ConfigError(
            f"a dataset config is {{'name': ..., 'source': ..., 'augment': [...]}}, got {config!r}"
        )
    name, source, augment = config["name"], config["source"], config["augment"]
    if isinstance(augment, str) or not isinstance(augment, list | tuple):
        raise ConfigError(f"a dataset config's augment is a list, got {augment!r}")
    if name == source and not augment:
        return spec(source)
    return define(name, source, augment=augment, replace=True)


def fingerprint(x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> str:
    """The fingerprint ``spec(ref).facts()`` gives for these four arrays (checked as a
    reference's would be: DataError if they are bad)."""
    arrays = dict(zip(KEYS, (x_train, y_train, x_test, y_test), strict=True))
    return prepare("the arrays given", arrays).fingerprint


def save_npz(
    path: str | os.PathLike[str], x_train: Any, y_train: Any, x_test: Any, y_test: Any
) -> Path:
    """Write the four arrays (numpy arrays or torch tensors) to the .npz file ``path``, after
    checking them as a reference's would be; written under a temporary name and renamed
    into place, so nothing (and no half-written file) is left on failure. Returns the path."""
    target = Path(path).expanduser()
    given = dict(zip(KEYS, (x_train, y_train, x_test, y_test), strict=True))
    arrays = {key: as_numpy(str(target), key, value) for key, value in given.items()}
    prepare(str(target), arrays)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def default_root() -> Path:
    """$ANNEALBENCH_DATA, else $XDG_CACHE_HOME/annealbench/data, else ~/.cache/annealbench/data."""
    explicit = os.environ.get("ANNEALBENCH_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "annealbench" / "data"


def validation_size(validation: int | float | None, train_size: int) -> int:
    """How many of ``train_size`` training examples ``validation`` holds out: 0 for None, N
    for an integer N (1 <= N < train_size), round(fraction × train_size) (at least 1) for a
    fraction strictly between 0 and 1. ConfigError, saying the valid range, otherwise."""
    if validation is None:
        return 0
    check_validation(validation)
    if isinstance(validation, numbers.Integral):
        size = int(validation)
    else:
        size = max(1, round(float(validation) * train_size))
    if size >= train_size:
        given = f"{validation!r} of" if size == validation else f"{validation!r} ({size}) of"
        raise ConfigError(
            f"validation {given} {train_size} training examples leaves none to train on; "
            f"give 1 to {train_size - 1} examples, or a fraction between 0 and 1"
        )
    return size


def check_validation(validation: Any) -> None:
    """``validation`` is None, a positive integer or a fraction strictly between 0 and 1."""
    valid = (
        validation is None
        or (isinstance(validation, numbers.Integral) and validation >= 1)
        or (isinstance(validation, numbers.Real) and 0 < float(validation) < 1)
    )
    if isinstance(validation, bool | np.bool_) or not valid:
        raise ConfigError(
            f"validation must be a number of training examples (an integer of at least 1, "
            f"less than the training set) or a fraction strictly between 0 and 1, got "
            f"{validation!r}; or give none for no validation split"
        )


def load(
    name: DatasetRef,
    root: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    subset: int | None = None,
    download: bool = True,
    validation: int | float | None = None,
    scaling: str = "standard",
) -> DeviceData:
    """Load a dataset (a name or a reference) onto ``device`` once per process; the same
    arguments give the same tensors.

    ``scaling``: ``standard`` normalizes inputs per channel, ``(x - mean) / std``; ``unit``
    leaves them in [0, 1] (uint8 images divided by 255, float inputs as given), one reading
    of a paper that does not state its preprocessing (docs/fidelity.md).

    ``subset=N`` keeps the first N training examples (the test set stays whole); then
    ``validation`` (N examples, or a fraction of those left) holds some out as ``val_x``/
    ``val_y``, picked by :data:`VALIDATION_SEED`, the rest staying in order. Missing files come
    from Debian's packaged copy where there is one, then (if ``download``) from the dataset's
    download; otherwise a DataError says where to put them. A user's dataset is read from its
    reference (``root`` and ``download`` do not apply).
    """
    dataset = spec(name)
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 1
    ):
        raise ConfigError(
            f"subset must be a positive number of training images, got {subset!r}; give an "
            f"integer of at least 1, or no subset for the whole training set"
        )
    check_validation(validation)
    if scaling not in SCALINGS:
        raise ConfigError(f"input scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    if scaling == "unit":  # the same dataset with mean 0 and std 1: padding stays black
        dataset = dataclasses.replace(
            dataset, mean=tuple(0.0 for _ in dataset.mean), std=tuple(1.0 for _ in dataset.std)
        )
    root_path = Path(root).expanduser() if root is not None else default_root()
    return _load_cached(
        dataset,
        str(root_path.resolve()),
        str(torch.device(device)),
        subset,
        bool(download),
        validation,
    )


def clear_cache() -> None:
    """Forget the cached datasets (frees their memory once no caller holds them), and the
    arrays read from users' references."""
    _load_cached.cache_clear()
    user.clear_cache()


@functools.lru_cache(maxsize=8)
def _load_cached(
    dataset: Dataset,
    root: str,
    device: str,
    subset: int | None,
    download: bool,
    validation: int | float | None,
) -> DeviceData:
    root_path = Path(root)
    dataset.ensure_files(root_path, download)
    train_images, train_labels, test_images, test_labels = dataset.read_checked(root_path)
    if subset is not None:
        if subset > len(train_images):
            raise ConfigError(
                f"subset={subset} is more than the {len(train_images)} training images of "
                f"{dataset.name} in {dataset.origin(root_path)}; give at most "
                f"{len(train_images)}, or no subset for all of them"
            )
        train_images, train_labels = train_images[:subset], train_labels[:subset]
    held, kept = validation_split(validation_size(validation, len(train_images)), len(train_images))
    return DeviceData(
        spec=dataset,
        train_x=dataset.normalize(train_images[kept] if kept is not None else train_images, device),
        train_y=(train_labels[kept] if kept is not None else train_labels).to(device),
        test_x=dataset.normalize(test_images, device),
        test_y=test_labels.to(device),
        val_x=dataset.normalize(train_images[held], device) if held is not None else None,
        val_y=train_labels[held].to(device) if held is not None else None,
    )


def validation_split(size: int, n: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(validation indices, training indices), both ascending, of ``n`` examples with ``size``
    held out: the first ``size`` of a permutation drawn from :data:`VALIDATION_SEED`. (None,
    None) for no validation split."""
    if size == 0:
        return None, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held = order[:size].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    return held, keep.nonzero().flatten()
