"""A user's four arrays, checked and put in the form training uses, with their statistics.

:func:`prepare` takes ``x_train, y_train, x_test, y_test`` as a user gives them (numpy arrays
or torch tensors) and returns a :class:`Prepared`: inputs channel-first, labels int64, the
normalization statistics and a fingerprint. Every problem is a DataError that names where the
arrays came from (a file, a folder, an import path), what is wrong and how to fix it.

The input layouts (the per-example shape ``x.shape[1:]`` must be the same in both splits):

- ``(N, F)``: rows of F features (tabular data); ``input_shape`` is ``(F,)``.
- ``(N, H, W)``: grayscale images, read as ``(N, 1, H, W)``.
- ``(N, C, H, W)`` with C in {1, 3, 4}: channel-first images, as they are.
- ``(N, H, W, C)`` with C in {1, 3, 4} and H not in {1, 3, 4}: channel-last images (numpy,
  PIL, TensorFlow), transposed to channel-first. When both readings are possible (the second
  dimension is 1, 3 or 4) the array is taken as channel-first.

uint8 inputs are pixels, scaled by 1/255 before normalization; other inputs (floats, wider
integers) are used as they are, in float32. Labels are integer class indices ``0..C-1`` (a
float array of whole numbers and an ``(N, 1)`` column are accepted too); every class must
appear in the training split, and C is one more than the largest training label.

The statistics are computed on the training split as given (before any subset or validation
split, so every run of a dataset normalizes the same way): per channel for images, per feature
for tabular data; a zero standard deviation (a constant channel or feature) becomes 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from annealbench.errors import DataError

# The four arrays of a dataset, in this order everywhere (.npz keys, a factory's tuple).
KEYS = ("x_train", "y_train", "x_test", "y_test")
# The channel counts an image array may have (gray, RGB, RGBA).
CHANNELS = (1, 3, 4)
# More classes than this is a mistake (regression targets, ids), not a classifier's labels.
MAX_CLASSES = 1 << 20
# How many input values one pass of the statistics converts to float64 at a time.
CHUNK_VALUES = 1 << 22

LABEL_FIX = "give integer class indices 0..C-1, one per example"


@dataclass(frozen=True, eq=False)
class Prepared:
    """Four checked arrays in the form training uses, and what is computed from them."""

    x_train: np.ndarray  # uint8 or float32; (N, C, H, W) or (N, F); C-contiguous
    y_train: np.ndarray  # int64, (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]  # per channel or feature, of x_train (uint8 scaled by 1/255)
    std: tuple[float, ...]
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four arrays as CPU tensors sharing their memory (read-only: do not modify)."""
        arrays = (self.x_train, self.y_train, self.x_test, self.y_test)
        return tuple(torch.from_numpy(a) for a in arrays)  # type: ignore[return-value]


def prepare(where: str, arrays: Mapping[str, Any]) -> Prepared:
    """Check and convert ``arrays`` (the four :data:`KEYS`) read from ``where``."""
    raw = {key: as_numpy(where, key, arrays[key]) for key in KEYS}
    x_train, x_test = inputs(where, raw["x_train"], raw["x_test"])
    y_train, y_test = (
        labels(where, "y_train", raw["y_train"]),
        labels(where, "y_test", raw["y_test"]),
    )
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(
                f"{where}: x_{split} holds {len(x)} examples but y_{split} {len(y)} labels; "
                f"give one label per example"
            )
    check_finite(where, "x_train", x_train)
    check_finite(where, "x_test", x_test)
    num_classes = classes(where, y_train, y_test)
    mean, std = statistics(x_train)
    return Prepared(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        mean=mean,
        std=std,
        fingerprint=fingerprint(x_train, y_train, x_test, y_test),
    )


def as_numpy(where: str, key: str, value: Any) -> np.ndarray:
    """A numpy array of numbers from a numpy array or a torch tensor."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        value = value.numpy()  # a complex dtype is refused below, by name
    if not isinstance(value, np.ndarray):
        raise DataError(
            f"{where}: {key} is a {type(value).__name__}, not an array; give numpy arrays or "
            f"torch tensors (numpy.asarray converts most array-likes)"
        )
    if value.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: {key} holds {value.dtype} values; give numbers (uint8 pixels, float "
            f"features, integer labels)"
        )
    return value


def inputs(where: str, x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits' inputs, channel-first (see the module's layouts), uint8 or float32."""
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        if x.ndim < 1 or len(x) == 0:
            raise DataError(f"{where}: {key} is empty; give at least one example in each split")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{where}: x_train holds examples of shape {x_train.shape[1:]} but x_test "
            f"{x_test.shape[1:]}; give both splits the same shape per example"
        )
    converted = []
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        x = channel_first(where, key, x)
        x = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
        converted.append(np.ascontiguousarray(x))
    return converted[0], converted[1]


def channel_first(where: str, key: str, x: np.ndarray) -> np.ndarray:
    """``x`` as (N, F) or (N, C, H, W), by the layout rule of the module docstring."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] in CHANNELS:
        return x
    if x.ndim == 4 and x.shape[3] in CHANNELS:
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4:
        problem = "neither channel-first (N, C, H, W) nor channel-last (N, H, W, C) images"
        fix = "images need C in {1, 3, 4} channels: give (N, C, H, W) or (N, H, W, C)"
    else:
        problem = "not a layout annealbench reads"
        fix = "give (N, F) feature rows, or images (N, H, W), (N, C, H, W) or (N, H, W, C)"
    raise DataError(f"{where}: {key} has shape {x.shape}: {problem}; {fix}")


def labels(where: str, key: str, y: np.ndarray) -> np.ndarray:
    """Integer class indices as int64; a DataError for anything else."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot rows? y.argmax(1) turns them into class indices)" if y.ndim == 2 else ""
        raise DataError(f"{where}: {key} has shape {y.shape}{hint}; {LABEL_FIX}")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            bad = y[~whole]
            raise DataError(
                f"{where}: {key} holds {len(bad)} labels that are not whole numbers (such as "
                f"{bad[0].item()!r}); {LABEL_FIX}"
            )
    if len(y) and y.max() >= MAX_CLASSES:
        raise DataError(
            f"{where}: {key} holds labels as large as {y.max().item()!r}, more than {MAX_CLASSES} "
            f"classes; {LABEL_FIX}"
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        negative = y[y < 0]
        raise DataError(
            f"{where}: {key} holds {len(negative)} negative labels (such as {negative[0]}); "
            f"{LABEL_FIX}"
        )
    return np.ascontiguousarray(y)


def classes(where: str, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """The number of classes C: the training labels must be exactly 0..C-1, with C >= 2, and
    the test labels among them."""
    present = np.unique(y_train)
    num_classes = int(present[-1]) + 1
    if num_classes < 2:
        raise DataError(
            f"{where}: y_train holds only class 0; a classifier needs at least 2 classes, "
            f"{LABEL_FIX}"
        )
    if len(present) != num_classes:
        missing = np.setdiff1d(np.arange(num_classes), present)
        raise DataError(
            f"{where}: y_train has no examples of classes {listed(missing)} (its labels run "
            f"{present[0]}..{present[-1]}); {LABEL_FIX}, every class in the training split"
        )
    extra = np.setdiff1d(np.unique(y_test), present)
    if len(extra):
        raise DataError(
            f"{where}: y_test has classes {listed(extra)} that y_train lacks (it has "
            f"0..{num_classes - 1}); {LABEL_FIX}, using the training split's classes"
        )
    return num_classes


def check_finite(where: str, key: str, x: np.ndarray) -> None:
    """No NaN or infinite input values."""
    if x.dtype.kind != "f":
        return
    nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
    if nan or inf:
        rows = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        raise DataError(
            f"{where}: {key} holds {nan} NaN and {inf} infinite values (in {len(rows)} "
            f"examples, the first at index {rows[0]}); replace or drop them"
        )


def statistics(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation of ``x`` per channel (images) or feature (rows), in float64,
    uint8 scaled by 1/255; a zero standard deviation becomes 1. Converted in chunks, so a
    large uint8 array is never copied whole into float64."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    scale = 1 / 255 if x.dtype == np.uint8 else 1.0
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    rows = max(1, CHUNK_VALUES // max(1, x[0].size))
    total = np.zeros(x.shape[1])
    for start in range(0, len(x), rows):
        total += (x[start : start + rows].astype(np.float64) * scale).sum(axis=axes)
    count = x.size // x.shape[1]
    mean = total / count
    squares = np.zeros(x.shape[1])
    for start in range(0, len(x), rows):
        block = x[start : start + rows].astype(np.float64) * scale - mean.reshape(shape)
        squares += np.square(block).sum(axis=axes)
    std = np.sqrt(squares / count)
    std[std == 0] = 1.0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def fingerprint(*arrays: np.ndarray) -> str:
    """sha256 (hex) of the four prepared arrays' dtypes, shapes and bytes, in :data:`KEYS`
    order: the data as training sees it, so the same data in another layout or file has the
    same fingerprint, and one changed value gives another."""
    digest = hashlib.sha256()
    for key, array in zip(KEYS, arrays, strict=True):
        array = np.ascontiguousarray(array)
        digest.update(f"{key}:{array.dtype.str}:{array.shape}\n".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def listed(values: Iterable[Any], limit: int = 10) -> str:
    """``[1, 2, 3]``, or the first ``limit`` and a count of the rest."""
    values = [v.item() if hasattr(v, "item") else v for v in values]
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f", ... ({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"
