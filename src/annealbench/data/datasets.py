"""Each dataset is one object: its facts, where its files are, how they are read, checked and
augmented.

:class:`Dataset` is generic: the facts of Table 1 and the standard preprocessing, the files it
needs under a data root, and what every dataset does the same way (filling in missing files,
checking what was read, normalizing, augmenting). A subclass says how to ``read(root)`` its
files into four tensors; :class:`TorchvisionDataset` and its families (IDX files, SVHN's .mat,
CIFAR's pickles) read through torchvision's classes and override only what differs. Nothing here
looks at a dataset's name: a new dataset is a new object.
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torchvision.datasets as tv_datasets
from torchvision.datasets.utils import check_md5

from annealbench.data.files import download_staged, gunzip_atomic, idx_problem, parse_problem
from annealbench.errors import ConfigError, DataError

# Random-crop padding (the standard RandomCrop(32, padding=4) of SVHN and CIFAR).
CROP_PADDING = 4

# Train images (uint8 N×C×H×W), train labels (integers), test images, test labels. A user's
# dataset (:mod:`annealbench.data.user`) may also hold float inputs, and N×F feature rows.
Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """One dataset: what Table 1 and the standard preprocessing say about it, and its files.

    Subclasses implement :meth:`read`; to offer a download, set ``downloader`` and implement
    :meth:`download` and :meth:`download_command`; to name bad files, :meth:`file_problem`.
    """

    name: str
    num_classes: int
    # (C, H, W) for images (every built-in dataset); (F,) for rows of F features (tabular).
    input_shape: tuple[int, ...]
    train_size: int  # of the real dataset; a smaller copy on disk loads too
    test_size: int
    # Per channel (per feature for tabular data), of the training inputs; uint8 images are
    # scaled to [0, 1] first.
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: bool = False  # random crop with CROP_PADDING pixels of black padding
    flip: bool = False  # random horizontal flip (never for digits)
    folder: str = ""  # where the files are, relative to the data root
    files: tuple[str, ...] = ()  # the files read there; missing ones are filled in
    debian_package: str | None = None  # a Debian package holding the files gzip-compressed
    debian_dir: Path | None = None  # where that package puts them

    # Who fills in missing files over the network, for messages ("torchvision's download");
    # None: nobody, the user puts the files in place.
    downloader: ClassVar[str | None] = None
    # The on-disk layout of ``folder`` and ``files``, named in messages if well known.
    layout: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        if len(self.input_shape) not in (1, 3):
            raise ConfigError(
                f"dataset {self.name!r} has input shape {tuple(self.input_shape)}; give "
                f"(channels, height, width) for images or (features,) for tabular data"
            )
        channels = self.input_shape[0]
        what = "channels" if len(self.input_shape) == 3 else "features"
        if len(self.mean) != channels or len(self.std) != channels:
            raise ConfigError(
                f"dataset {self.name!r} has {channels} {what} but {len(self.mean)} means and "
                f"{len(self.std)} standard deviations; give one of each per {what[:-1]}"
            )

    # -- What a study records about the data -------------------------------------------------

    def facts(self) -> dict[str, Any]:
        """The dataset's facts, JSON-ready: ``num_classes, input_shape, train_size,
        test_size, mean, std, fingerprint``. ``fingerprint`` (a sha256 of the arrays, to tell
        that the data changed between a run and its resume) is None for the built-in
        datasets, whose numbers are fixed."""
        return {
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "train_size": self.train_size,
            "test_size": self.test_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "fingerprint": None,
        }

    def to_config(self) -> dict[str, Any] | None:
        """What another process needs to rebuild this dataset (``data.from_config``); None
        for a dataset every process knows by its name (the built-in ones)."""
        return None

    def origin(self, root: Path) -> str:
        """Where the data is read from, for messages."""
        return str(self.files_in(root))

    # -- Reading ----------------------------------------------------------------------------

    def read(self, root: Path) -> Arrays:
        """Train and test images (uint8 N×C×H×W) and labels from the files under ``root``."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read its files")

    def read_checked(self, root: Path) -> Arrays:
        """:meth:`read`, with labels as int64; a read that fails, or gives images of the wrong
        shape or labels out of range, is a DataError naming the file at fault and the fix."""
        try:
            arrays = self.read(root)
        except DataError:
            raise
        except Exception as error:  # readers raise many kinds; find out which file is at fault
            raise self.diagnose(root, error) from error
        train_images, train_labels, test_images, test_labels = arrays
        self.check_arrays(root, "train", train_images, train_labels)
        self.check_arrays(root, "test", test_images, test_labels)
        return train_images, train_labels.long(), test_images, test_labels.long()

    def check_arrays(
        self, root: Path, split: str, images: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Files that parse but hold the wrong thing (shape, label range) are corrupt too."""
        where = f"the {split} files of {self.name} in {self.files_in(root)}"
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.input_shape:
            raise DataError(
                f"{where} hold {images.dtype} images of shape {tuple(images.shape[1:])}, "
                f"expected uint8 {self.input_shape}; {self.refetch_hint(root)}"
            )
        if len(images) != len(labels) or len(images) == 0:
            raise DataError(
                f"{where} hold {len(images)} images but {len(labels)} labels; "
                f"{self.refetch_hint(root)}"
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise DataError(
                f"{where} hold labels outside 0..{self.num_classes - 1}; {self.refetch_hint(root)}"
            )

    def normalize(self, images: torch.Tensor, device: str | torch.device) -> torch.Tensor:
        """uint8 N×C×H×W -> float32 (x/255 - mean)/std, converted on the device (4× less to
        copy). Float inputs are not scaled, and N×F rows are normalized per feature."""
        if images.dtype == torch.uint8:
            x = images.to(device).float().div_(255)
        else:  # a copy: the caller's tensor is left alone
            x = images.to(device=device, dtype=torch.float32, copy=True)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, device=device).view(shape)
        std = torch.tensor(self.std, device=device).view(shape)
        return x.sub_(mean).div_(std).contiguous()

    # -- Getting missing files: the Debian copy, then the download; else say how ------------

    def files_in(self, root: Path) -> Path:
        """The folder under ``root`` that holds this dataset's files."""
        return root / self.folder

    def ensure_files(self, root: Path, download: bool) -> None:
        """Fill in missing files from the Debian copy, then (if ``download``) the download;
        a DataError says what is missing and how to get it when neither can."""
        folder = self.files_in(root)
        missing = [name for name in self.files if not (folder / name).is_file()]
        if not missing or self.unpack_debian_copy(folder, missing):
            return
        problem = "download=False, so nothing was downloaded"
        if download and self.downloader is None:
            problem = "there is no download for it"
        elif download:
            try:
                self.download(root)
                return
            except Exception as error:  # no network, a moved mirror, a full disk: say so
                problem = f"{self.downloader} failed: {type(error).__name__}: {error}"
        raise DataError(self.missing_message(root, missing, problem))

    def unpack_debian_copy(self, folder: Path, missing: list[str]) -> bool:
        """Unpack the missing files from the Debian package's .gz copies, if all are there."""
        debian = self.debian_dir
        if debian is None or not all((debian / f"{name}.gz").is_file() for name in missing):
            return False
        folder.mkdir(parents=True, exist_ok=True)
        for name in missing:
            gunzip_atomic(debian / f"{name}.gz", folder / name)
        return True

    def download(self, root: Path) -> None:
        """Download the files into place under ``root`` (only when ``downloader`` is set)."""
        raise NotImplementedError(f"{type(self).__name__} has no download")

    def download_command(self, root: Path) -> str | None:
        """A shell command that downloads the files into ``root``, for messages; None if none."""
        return None

    def how_to_get(self, root: Path) -> str:
        """Every way to get the files into place, for error messages."""
        ways = []
        command = self.download_command(root)
        if self.downloader is not None and command is not None:
            ways.append(
                f"download it (needs network): annealbench train --dataset {self.name} "
                f"--data-root {root} ..., or {command}"
            )
        if self.debian_package:
            ways.append(
                f"install Debian's copy: apt-get install {self.debian_package} "
                f"(annealbench unpacks it from {self.debian_dir})"
            )
        layout = f" ({self.layout})" if self.layout else ""
        ways.append(f"put the files{layout} in {self.files_in(root)}")
        return "; or ".join(ways)

    def missing_message(self, root: Path, missing: list[str], problem: str) -> str:
        """What is missing, where, why it was not filled in, and how to get it."""
        return (
            f"{self.name}: missing {', '.join(missing)} in {self.files_in(root)} ({problem}). "
            f"To get it: {self.how_to_get(root)}."
        )

    def refetch_hint(self, root: Path) -> str:
        """The fix for a corrupt file."""
        return f"delete it and get it again ({self.how_to_get(root)})"

    # -- Diagnosis after a failed read: which file is missing, truncated or corrupt ---------

    def diagnose(self, root: Path, error: Exception) -> DataError:
        """The DataError for a failed read, naming the first bad file found."""
        folder = self.files_in(root)
        for name in self.files:
            path = folder / name
            if not path.is_file():
                return DataError(self.missing_message(root, [name], "not found"))
            problem = self.file_problem(path)
            if problem:
                return DataError(f"{path} is {problem}; {self.refetch_hint(root)}")
        for name, md5 in self.known_md5():
            if not check_md5(str(folder / name), md5):
                return DataError(
                    f"{folder / name} is corrupt (its md5 is not the published {md5}); "
                    f"{self.refetch_hint(root)}"
                )
        return DataError(
            f"could not read {self.name} from {folder}: {type(error).__name__}: {error}; "
            f"{self.refetch_hint(root)}"
        )

    def file_problem(self, path: Path) -> str | None:
        """What is wrong with one of the files, or None if no fault is found."""
        return None

    def known_md5(self) -> list[tuple[str, str]]:
        """(file name, md5) of the files whose published md5 sums are known."""
        return []

    # -- Augmentation: batched, on the device, all randomness from one generator ------------

    @property
    def augments(self) -> bool:
        """Whether :meth:`augment` changes anything (random crop or flip)."""
        return self.crop or self.flip

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (zero-padded by CROP_PADDING) and/or horizontal flip, per sample.

        ``x`` is a normalized N×C×H×W batch; padding is black in pixel space, i.e. -mean/std
        after normalization, as torchvision's RandomCrop(padding=4) before Normalize. The crop
        offsets are drawn first, then the flips, all from ``generator`` (on x's device), so a
        generator state gives one result. Identity (the same tensor) when not augmented.
        """
        if self.crop:
            x = _random_crop(x, _black(self.mean, self.std, x.dtype, x.device), generator)
        if self.flip:
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x


@functools.lru_cache(maxsize=32)
def _black(
    mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A black pixel after normalization (-mean/std per channel), made once per device."""
    values = [-m / s for m, s in zip(mean, std, strict=True)]
    return torch.tensor(values, dtype=dtype, device=device)


def _random_crop(x: torch.Tensor, black: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    pad = CROP_PADDING
    padded = black.view(1, c, 1, 1).repeat(n, 1, h + 2 * pad, w + 2 * pad)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    # Two gathers (rows, then columns) with broadcast indices: one pass, no per-sample Python.
    rows = (top.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    x = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
    cols = (left.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    return x.gather(3, cols.expand(n, c, h, w))


# ---------------------------------------------------------------------------------------------
# Datasets read through torchvision's classes, in torchvision's on-disk layout.


@dataclass(frozen=True, kw_only=True)
class TorchvisionDataset(Dataset):
    """A dataset read (and downloaded) by one of torchvision's dataset classes; ``folder`` and
    ``files`` are where that class looks, so an existing torchvision data folder works as is."""

    torchvision_class: type

    downloader: ClassVar[str | None] = "torchvision's download"
    layout: ClassVar[str | None] = "torchvision's layout"

    def torchvision_dataset(self, root: Path, train: bool = True, **kwargs: Any) -> Any:
        """The torchvision dataset of one split (``kwargs``: transform=, download=...)."""
        return self.torchvision_class(str(root), train=train, **kwargs)

    def split_tensors(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (uint8 N×C×H×W) and labels of one torchvision dataset."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to read a split")

    def read(self, root: Path) -> Arrays:
        train = self.split_tensors(self.torchvision_dataset(root, train=True))
        test = self.split_tensors(self.torchvision_dataset(root, train=False))
        return (*train, *test)

    def download(self, root: Path) -> None:
        download_staged(root, self.folder, self.files, self.download_into)

    def download_into(self, staging: Path) -> None:
        """torchvision's download of every split into ``staging`` (its own layout)."""
        self.torchvision_dataset(staging, train=True, download=True)

    def download_snippet(self, root: Path) -> str:
        """The Python that asks torchvision to download the files into ``root``."""
        return f"torchvision.datasets.{self.torchvision_class.__name__}('{root}', download=True)"

    def download_command(self, root: Path) -> str | None:
        return f'python -c "import torchvision; {self.download_snippet(root)}"'


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True, kw_only=True)
class IdxDataset(TorchvisionDataset):
    """The MNIST family: four IDX files (LeCun's format) of gray images and labels."""

    files: tuple[str, ...] = _MNIST_FILES

    def split_tensors(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return split.data.unsqueeze(1), split.targets  # .data is an N×H×W uint8 tensor

    def file_problem(self, path: Path) -> str | None:
        return idx_problem(path)


@dataclass(frozen=True, kw_only=True)
class SvhnDataset(TorchvisionDataset):
    """SVHN: one MATLAB .mat file per split, in the data root itself."""

    files: tuple[str, ...] = ("train_32x32.mat", "test_32x32.mat")

    def torchvision_dataset(self, root: Path, train: bool = True, **kwargs: Any) -> Any:
        return self.torchvision_class(str(root), split="train" if train else "test", **kwargs)

    def split_tensors(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # .data is N×C×H×W uint8; torchvision already maps the digit 0's label 10 to 0.
        return torch.from_numpy(split.data), torch.from_numpy(split.labels)

    def download_into(self, staging: Path) -> None:
        for train in (True, False):
            self.torchvision_dataset(staging, train=train, download=True)

    def download_snippet(self, root: Path) -> str:
        cls = self.torchvision_class.__name__
        one = f"torchvision.datasets.{cls}('{root}', split=s, download=True)"
        return f"[{one} for s in ('train', 'test')]"

    def file_problem(self, path: Path) -> str | None:
        import scipy.io

        return parse_problem(
            lambda: scipy.io.loadmat(str(path), variable_names=("X", "y")),
            ("X", "y"),
            f"a {self.name} data file",
        )

    def known_md5(self) -> list[tuple[str, str]]:
        splits = self.torchvision_class.split_list
        return [(splits[s][1], splits[s][2]) for s in ("train", "test")]


@dataclass(frozen=True, kw_only=True)
class CifarDataset(TorchvisionDataset):
    """CIFAR-10/100: Python pickles of rows of R, G, B planes, plus a meta file."""

    def split_tensors(self, split: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # .data is N×H×W×C uint8 numpy, .targets a list of ints.
        return torch.from_numpy(split.data).permute(0, 3, 1, 2), torch.tensor(split.targets)

    def file_problem(self, path: Path) -> str | None:
        def unpickle() -> Any:
            with open(path, "rb") as handle:
                return pickle.load(handle, encoding="latin1")

        return parse_problem(unpickle, (), f"a {self.name} data file")

    def known_md5(self) -> list[tuple[str, str]]:
        cls = self.torchvision_class
        listed = [(name, md5) for name, md5 in cls.train_list + cls.test_list]
        return [*listed, (cls.meta["filename"], cls.meta["md5"])]


# ---------------------------------------------------------------------------------------------
# The paper's Table 1 (CIFAR: 50,000 training images; the table's 60,000 counts train + test).
# mean/std: the standard per-channel statistics of the training images.

_GRAY_28 = (1, 28, 28)
_COLOR_32 = (3, 32, 32)

TABLE_1: tuple[Dataset, ...] = (
    IdxDataset(
        name="mnist", num_classes=10, input_shape=_GRAY_28, train_size=60_000, test_size=10_000,
        mean=(0.1307,), std=(0.3081,), folder="MNIST/raw", torchvision_class=tv_datasets.MNIST,
    ),
    IdxDataset(
        name="fashion-mnist", num_classes=10, input_shape=_GRAY_28, train_size=60_000,
        test_size=10_000, mean=(0.2860,), std=(0.3530,), folder="FashionMNIST/raw",
        torchvision_class=tv_datasets.FashionMNIST, debian_package="dataset-fashion-mnist",
        debian_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
    SvhnDataset(
        name="svhn", num_classes=10, input_shape=_COLOR_32, train_size=73_257, test_size=26_032,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), crop=True,
        torchvision_class=tv_datasets.SVHN,
    ),
    CifarDataset(
        name="cifar10", num_classes=10, input_shape=_COLOR_32, train_size=50_000,
        test_size=10_000, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        crop=True, flip=True, folder="cifar-10-batches-py",
        files=tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
        torchvision_class=tv_datasets.CIFAR10,
    ),
    CifarDataset(
        name="cifar100", num_classes=100, input_shape=_COLOR_32, train_size=50_000,
        test_size=10_000, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        crop=True, flip=True, folder="cifar-100-python", files=("train", "test", "meta"),
        torchvision_class=tv_datasets.CIFAR100,
    ),
)  # fmt: skip
