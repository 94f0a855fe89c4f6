"""A user's dataset: a :class:`Dataset` whose arrays come from a reference (a .npz file, an
ImageFolder folder, an import path or an entry point; see :mod:`annealbench.data.sources`).

Its facts (classes, input shape, sizes, normalization statistics, fingerprint) are read from
the arrays themselves, which are read once per process and kept (:func:`read_prepared`, keyed
by the source's :func:`~annealbench.data.sources.stamp`, so an edited file is read again). It
has no augmentation unless asked for (``augment``: ``crop`` and/or ``flip``), and no files
under the data root: ``root`` and ``download`` do not apply to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from annealbench.data.arrays import Prepared, prepare
from annealbench.data.datasets import Arrays, Dataset
from annealbench.data.sources import describe, read, stamp
from annealbench.errors import ConfigError, DataError

# The augmentations a user's dataset may ask for, in the order they are applied.
AUGMENTATIONS = ("crop", "flip")


@dataclass(frozen=True, kw_only=True)
class UserDataset(Dataset):
    """A dataset read from ``source`` (a canonical reference) of ``kind`` (sources.PATH,
    IMPORT or NAME); ``fingerprint`` identifies its arrays. Two of them are equal when their
    name, augmentation, source and contents are."""

    source: str
    kind: str
    fingerprint: str
    # What the source's stamp was when the facts were read; not part of equality (the
    # fingerprint is), so touching a file without changing it keeps the dataset equal.
    stamp: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    layout: ClassVar[str | None] = "a user's reference"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.augments and len(self.input_shape) != 3:
            raise ConfigError(
                f"dataset {self.name!r} holds rows of {self.input_shape[0]} features; crop "
                f"and flip augment images only, so give augment=() for it"
            )

    @property
    def augmentation(self) -> tuple[str, ...]:
        """The augmentations it applies, a sub-tuple of :data:`AUGMENTATIONS`."""
        return tuple(a for a, on in zip(AUGMENTATIONS, (self.crop, self.flip), strict=True) if on)

    def facts(self) -> dict[str, Any]:
        return {**super().facts(), "fingerprint": self.fingerprint}

    def to_config(self) -> dict[str, Any]:
        """``{"name", "source", "augment"}``: ``data.from_config`` rebuilds it from this."""
        return {"name": self.name, "source": self.source, "augment": list(self.augmentation)}

    def origin(self, root: Path) -> str:
        return describe(self.kind, self.source)

    def current(self) -> UserDataset:
        """Itself while its source is unchanged; otherwise the dataset read afresh."""
        if stamp(self.kind, self.source) == self.stamp:
            return self
        return build(self.name, self.kind, self.source, self.augmentation)

    def prepared(self) -> Prepared:
        """Its arrays, checked; a DataError if the source changed since the facts were read."""
        arrays = read_prepared(self.kind, self.source, stamp(self.kind, self.source))
        if arrays.fingerprint != self.fingerprint:
            raise DataError(
                f"{self.origin(Path())} changed since its facts were read (fingerprint "
                f"{arrays.fingerprint[:16]}, was {self.fingerprint[:16]}); look the dataset "
                f"up again (annealbench.data.spec) and retry"
            )
        return arrays

    # -- Reading: no files under the data root --------------------------------------------

    def ensure_files(self, root: Path, download: bool) -> None:
        """Nothing to fetch: the data is where the reference says."""

    def read(self, root: Path) -> Arrays:
        return self.prepared().tensors()

    def read_checked(self, root: Path) -> Arrays:
        """:meth:`read`: the arrays were checked as they were read."""
        return self.read(root)


@functools.lru_cache(maxsize=4)
def read_prepared(kind: str, source: str, when: tuple[Any, ...]) -> Prepared:
    """The checked arrays of a source, read once per process for one ``stamp`` (``when``)."""
    return prepare(describe(kind, source), read(kind, source))


@functools.lru_cache(maxsize=64)
def cached_build(
    name: str, kind: str, source: str, augment: tuple[str, ...], when: tuple[Any, ...]
) -> UserDataset:
    arrays = read_prepared(kind, source, when)
    return UserDataset(
        name=name,
        num_classes=arrays.num_classes,
        input_shape=arrays.input_shape,
        train_size=len(arrays.y_train),
        test_size=len(arrays.y_test),
        mean=arrays.mean,
        std=arrays.std,
        crop="crop" in augment,
        flip="flip" in augment,
        source=source,
        kind=kind,
        fingerprint=arrays.fingerprint,
        stamp=when,
    )


def build(name: str, kind: str, source: str, augment: tuple[str, ...] = ()) -> UserDataset:
    """The dataset ``name`` read from ``source`` (the same object while the source is
    unchanged)."""
    return cached_build(name, kind, source, augment, stamp(kind, source))


def clear_cache() -> None:
    """Forget every array read (and the datasets built on them)."""
    cached_build.cache_clear()
    read_prepared.cache_clear()
