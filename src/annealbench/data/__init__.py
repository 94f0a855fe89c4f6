"""The paper's five datasets (Table 1), loaded once into normalized tensors on the training device.

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
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

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
from annealbench.errors import ConfigError, DataError

__all__ = [
    "CROP_PADDING",
    "REGISTRY",
    "Arrays",
    "CifarDataset",
    "DataError",
    "Dataset",
    "DeviceData",
    "IdxDataset",
    "SvhnDataset",
    "TorchvisionDataset",
    "clear_cache",
    "default_root",
    "load",
    "names",
    "register",
    "spec",
]

# Every dataset by name, Table 1's first; the one place a name leads to a dataset.
REGISTRY: dict[str, Dataset] = {dataset.name: dataset for dataset in TABLE_1}


@dataclass(frozen=True)
class DeviceData:
    """A whole dataset on one device: float32 normalized N×C×H×W images, int64 labels.

    Shared between callers through the per-process cache: treat the tensors as read-only.
    """

    spec: Dataset
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def names() -> list[str]:
    """The dataset names: the paper's Table 1 in order, then registered ones."""
    return list(REGISTRY)


def spec(name: str) -> Dataset:
    """The dataset called ``name``; ConfigError listing the valid names for an unknown one."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(names())}"
        ) from None


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


def default_root() -> Path:
    """$ANNEALBENCH_DATA, else $XDG_CACHE_HOME/annealbench/data, else ~/.cache/annealbench/data."""
    explicit = os.environ.get("ANNEALBENCH_DATA")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "annealbench" / "data"


def load(
    name: str,
    root: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    subset: int | None = None,
    download: bool = True,
) -> DeviceData:
    """Load a dataset onto ``device`` once per process; the same arguments give the same tensors.

    ``subset=N`` keeps the first N training images (the test set stays whole). Missing files come
    from Debian's packaged copy where there is one, then (if ``download``) from the dataset's
    download; otherwise a DataError says where to put them.
    """
    dataset = spec(name)
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 1
    ):
        raise ConfigError(
            f"subset must be a positive number of training images, got {subset!r}; give an "
            f"integer of at least 1, or no subset for the whole training set"
        )
    root_path = Path(root).expanduser() if root is not None else default_root()
    return _load_cached(
        dataset, str(root_path.resolve()), str(torch.device(device)), subset, bool(download)
    )


def clear_cache() -> None:
    """Forget the cached datasets (frees their memory once no caller holds them)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(
    dataset: Dataset, root: str, device: str, subset: int | None, download: bool
) -> DeviceData:
    root_path = Path(root)
    dataset.ensure_files(root_path, download)
    train_images, train_labels, test_images, test_labels = dataset.read_checked(root_path)
    if subset is not None:
        if subset > len(train_images):
            raise ConfigError(
                f"subset={subset} is more than the {len(train_images)} training images of "
                f"{dataset.name} in {dataset.files_in(root_path)}; give at most "
                f"{len(train_images)}, or no subset for all of them"
            )
        train_images, train_labels = train_images[:subset], train_labels[:subset]
    return DeviceData(
        spec=dataset,
        train_x=dataset.normalize(train_images, device),
        train_y=train_labels.to(device),
        test_x=dataset.normalize(test_images, device),
        test_y=test_labels.to(device),
    )
