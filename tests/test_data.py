"""Datasets on the device: tiny files in each dataset's real on-disk format, read through
torchvision's classes by ``data.load``; the Debian fallback; errors; batched augmentation."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
import torchvision.datasets.mnist
import torchvision.datasets.svhn
from torchvision.datasets.utils import check_integrity

from annealbench import data
from annealbench.errors import ConfigError

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
MNIST_FILES += ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of the real CIFAR and SVHN files, which tiny test files cannot
    match. Only that comparison is skipped (the file must still exist); everything else is
    torchvision's real reading code."""

    def exists_only(fpath: str, md5: str | None = None) -> bool:
        return check_integrity(fpath, None)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists_only)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists_only)


# ---------------------------------------------------------------------------------------------
# Writers for each dataset's real format.


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX (LeCun's MNIST format): 0, 0, type 0x08 (unsigned byte), ndim; big-endian sizes."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    folder: Path, n_train: int = 12, n_test: int = 5, size: int = 28, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four unpacked IDX files torchvision reads from <root>/<Class>/raw."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for filename, array in arrays.items():
        (folder / filename).write_bytes(idx_bytes(array))
    return arrays


def write_cifar(root: Path, name: str, n_train: int = 10, n_test: int = 4) -> dict[str, np.ndarray]:
    """CIFAR's python pickles: rows of 3072 bytes (R, G, B planes of 32×32), labels, a meta file."""
    rng = np.random.default_rng(1)
    num_classes = 10 if name == "cifar10" else 100
    train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    train_labels = [(7 * i) % num_classes for i in range(n_train)]
    test_labels = [(3 * i + 1) % num_classes for i in range(n_test)]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for batch, rows in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            entry = {"data": train[rows], "labels": [train_labels[i] for i in rows]}
            pickle.dump(entry, (folder / f"data_batch_{batch}").open("wb"))
        pickle.dump({"data": test, "labels": test_labels}, (folder / "test_batch").open("wb"))
        pickle.dump(
            {"label_names": [f"c{i}" for i in range(10)]}, (folder / "batches.meta").open("wb")
        )
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for filename, rows, labels in (("train", train, train_labels), ("test", test, test_labels)):
            entry = {"data": rows, "fine_labels": labels, "coarse_labels": [0] * len(labels)}
            pickle.dump(entry, (folder / filename).open("wb"))
        pickle.dump(
            {"fine_label_names": [f"c{i}" for i in range(100)]}, (folder / "meta").open("wb")
        )
    return {
        "train": train,
        "test": test,
        "train_y": np.array(train_labels),
        "test_y": np.array(test_labels),
    }


def write_svhn(root: Path, n_train: int = 11, n_test: int = 6) -> dict[str, np.ndarray]:
    """SVHN's .mat files: X is H×W×C×N uint8, y is N×1 with the digit 0 labelled 10."""
    rng = np.random.default_rng(2)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 meaning 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": images, "y": labels})
        arrays[split], arrays[f"{split}_y"] = images, labels
    return arrays


def normalized(images: np.ndarray, name: str) -> torch.Tensor:
    """The reference normalization: N×C×H×W uint8 -> (x/255 - mean)/std per channel."""
    spec = data.spec(name)
    x = torch.from_numpy(np.ascontiguousarray(images)).double() / 255
    mean = torch.tensor(spec.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((x - mean) / std).float()


def use_debian_dir(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Point Fashion-MNIST's Debian copy at ``folder`` (a registry entry, undone after the test)."""
    dataset = dataclasses.replace(data.spec("fashion-mnist"), debian_dir=folder)
    monkeypatch.setitem(data.REGISTRY, "fashion-mnist", dataset)


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders a failed write could have left."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


# ---------------------------------------------------------------------------------------------
# Specs and the data root.


def test_names_and_specs_follow_table_1() -> None:
    assert data.names() == ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"]
    sizes = {name: (data.spec(name).train_size, data.spec(name).test_size) for name in data.names()}
    assert sizes == {
        "mnist": (60_000, 10_000),
        "fashion-mnist": (60_000, 10_000),
        "svhn": (73_257, 26_032),
        "cifar10": (50_000, 10_000),
        "cifar100": (50_000, 10_000),
    }
    assert data.spec("cifar100").num_classes == 100
    assert data.spec("mnist").input_shape == (1, 28, 28)
    assert data.spec("svhn").input_shape == (3, 32, 32)
    augmentation = {name: (data.spec(name).crop, data.spec(name).flip) for name in data.names()}
    assert augmentation == {
        "mnist": (False, False),
        "fashion-mnist": (False, False),
        "svhn": (True, False),  # digits must not be mirrored
        "cifar10": (True, True),
        "cifar100": (True, True),
    }
    assert data.spec("fashion-mnist").debian_package == "dataset-fashion-mnist"
    assert data.spec("cifar10").torchvision_class is torchvision.datasets.CIFAR10


def test_unknown_dataset_is_a_config_error_listing_the_valid_names(tmp_path: Path) -> None:
    for call in (lambda: data.load("imagenet", root=tmp_path), lambda: data.spec("imagenet")):
        with pytest.raises(
            ConfigError, match="unknown dataset 'imagenet'; valid datasets: "
        ) as error:
            call()
        assert isinstance(error.value, ValueError)  # old `except ValueError` still catches it
        for name in data.names():
            assert name in str(error.value)
    with pytest.raises(ConfigError, match=r"unknown dataset \['mnist'\]"):
        data.spec(["mnist"])  # type: ignore[arg-type]


def test_default_root_prefers_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANNEALBENCH_DATA", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_root() == tmp_path / "explicit"
    monkeypatch.delenv("ANNEALBENCH_DATA")
    assert data.default_root() == tmp_path / "xdg" / "annealbench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_root() == tmp_path / "home" / ".cache" / "annealbench" / "data"


def test_load_uses_the_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    monkeypatch.setenv("ANNEALBENCH_DATA", str(tmp_path))
    assert data.load("mnist", download=False).train_x.shape == (12, 1, 28, 28)


# ---------------------------------------------------------------------------------------------
# Each loader on tiny files in the real format.


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_family_loads_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    arrays = write_mnist(tmp_path / folder / "raw")
    loaded = data.load(name, root=tmp_path, download=False)
    assert loaded.spec is data.spec(name)
    assert loaded.train_x.shape == (12, 1, 28, 28)
    assert loaded.test_x.shape == (5, 1, 28, 28)
    assert loaded.train_x.dtype == loaded.test_x.dtype == torch.float32
    assert loaded.train_y.dtype == loaded.test_y.dtype == torch.int64
    assert loaded.train_x.device.type == "cpu"
    assert loaded.train_x.is_contiguous()
    torch.testing.assert_close(
        loaded.train_x, normalized(arrays["train-images-idx3-ubyte"][:, None], name)
    )
    torch.testing.assert_close(
        loaded.test_x, normalized(arrays["t10k-images-idx3-ubyte"][:, None], name)
    )
    assert loaded.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert loaded.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_python_pickles(tmp_path: Path, skip_md5: None, name: str) -> None:
    arrays = write_cifar(tmp_path, name)
    loaded = data.load(name, root=tmp_path, download=False)
    assert loaded.train_x.shape == (10, 3, 32, 32)
    assert loaded.test_x.shape == (4, 3, 32, 32)
    assert loaded.train_x.is_contiguous()
    # Each row is the R, G, B planes: the tensor must be those planes, in file order.
    torch.testing.assert_close(
        loaded.train_x, normalized(arrays["train"].reshape(-1, 3, 32, 32), name)
    )
    torch.testing.assert_close(
        loaded.test_x, normalized(arrays["test"].reshape(-1, 3, 32, 32), name)
    )
    assert loaded.train_y.tolist() == arrays["train_y"].tolist()
    assert loaded.test_y.tolist() == arrays["test_y"].tolist()
    assert loaded.train_y.dtype == torch.int64


def test_svhn_loads_mat_files_and_maps_label_10_to_0(tmp_path: Path, skip_md5: None) -> None:
    arrays = write_svhn(tmp_path)
    loaded = data.load("svhn", root=tmp_path, download=False)
    assert loaded.train_x.shape == (11, 3, 32, 32)
    assert loaded.test_x.shape == (6, 3, 32, 32)
    # X[h, w, c, i] is pixel (h, w), channel c of image i.
    torch.testing.assert_close(
        loaded.train_x, normalized(arrays["train"].transpose(3, 2, 0, 1), "svhn")
    )
    torch.testing.assert_close(
        loaded.test_x, normalized(arrays["test"].transpose(3, 2, 0, 1), "svhn")
    )
    expected = arrays["train_y"].ravel().astype(np.int64) % 10  # the digit 0 is stored as 10
    assert loaded.train_y.tolist() == expected.tolist()
    assert 0 in loaded.train_y.tolist() and 10 not in loaded.train_y.tolist()
    assert loaded.train_y.dtype == torch.int64


def test_subset_keeps_the_first_training_images_and_the_whole_test_set(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    full = data.load("mnist", root=tmp_path, download=False)
    part = data.load("mnist", root=tmp_path, download=False, subset=4)
    assert torch.equal(part.train_x, full.train_x[:4])
    assert torch.equal(part.train_y, full.train_y[:4])
    assert torch.equal(part.test_x, full.test_x)
    assert torch.equal(part.test_y, full.test_y)
    with pytest.raises(ConfigError, match="subset=13 is more than the 12 training images") as error:
        data.load("mnist", root=tmp_path, download=False, subset=13)
    assert "give at most 12, or no subset" in str(error.value)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ConfigError, match="subset must be a positive number") as error:
            data.load("mnist", root=tmp_path, download=False, subset=bad)  # type: ignore[arg-type]
        assert f"got {bad!r}; give an integer of at least 1, or no subset" in str(error.value)


def test_load_is_cached_per_process(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw")
    first = data.load("mnist", root=tmp_path, download=False)
    assert data.load("mnist", root=str(tmp_path), download=False) is first
    assert data.load("mnist", root=tmp_path / "MNIST" / "..", download=False) is first
    assert data.load("mnist", root=tmp_path, download=False, subset=3) is not first
    # The cache, not the files, answers: a changed file is seen only after clear_cache().
    write_mnist(tmp_path / "MNIST" / "raw", seed=5)
    assert data.load("mnist", root=tmp_path, download=False) is first
    data.clear_cache()
    reloaded = data.load("mnist", root=tmp_path, download=False)
    assert reloaded is not first
    assert not torch.equal(reloaded.train_x, first.train_x)


# ---------------------------------------------------------------------------------------------
# Missing data: Debian's copy, torchvision's download, or an error that says what to do.


def write_debian_copy(folder: Path) -> dict[str, np.ndarray]:
    """Debian's dataset-fashion-mnist: the four IDX files, gzip-compressed."""
    arrays = write_mnist(folder / "unpacked")
    for filename in MNIST_FILES:
        (folder / f"{filename}.gz").write_bytes(
            gzip.compress((folder / "unpacked" / filename).read_bytes())
        )
    return arrays


def test_missing_fashion_mnist_is_unpacked_from_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    arrays = write_debian_copy(debian)
    use_debian_dir(monkeypatch, debian)
    root = tmp_path / "root"
    loaded = data.load("fashion-mnist", root=root, download=False)
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST_FILES)
    for filename in MNIST_FILES:
        assert (raw / filename).read_bytes() == (debian / "unpacked" / filename).read_bytes()
    assert loaded.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_a_corrupt_debian_file_is_named_and_nothing_half_written_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = tmp_path / "debian"
    write_debian_copy(debian)
    packed = (debian / "t10k-images-idx3-ubyte.gz").read_bytes()
    (debian / "t10k-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    use_debian_dir(monkeypatch, debian)
    root = tmp_path / "root"
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz") as error:
        data.load("fashion-mnist", root=root, download=False)
    assert "truncated or corrupt" in str(error.value)
    raw = root / "FashionMNIST" / "raw"
    assert "t10k-images-idx3-ubyte" not in [p.name for p in raw.iterdir()]
    assert leftovers(root) == []


def test_missing_data_error_says_where_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_debian_dir(monkeypatch, tmp_path / "not-installed")
    with pytest.raises(data.DataError) as error:
        data.load("fashion-mnist", root=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message
    assert f"--data-root {tmp_path}" in message
    assert "torchvision.datasets.FashionMNIST" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=False" in message

    with pytest.raises(data.DataError) as error:
        data.load("cifar10", root=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "torchvision.datasets.CIFAR10" in message
    assert "apt-get" not in message  # no Debian package for CIFAR
    assert leftovers(tmp_path) == []


def test_a_failed_download_is_reported_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_download(self: torchvision.datasets.MNIST) -> None:
        raw = Path(self.raw_folder)
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03 cut off")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets.mnist.MNIST, "download", half_download)
    with pytest.raises(
        data.DataError, match="torchvision's download failed: RuntimeError"
    ) as error:
        data.load("mnist", root=tmp_path, download=True)
    assert "no network" in str(error.value)
    assert list(tmp_path.rglob("*")) == []


def test_a_download_is_moved_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(self: torchvision.datasets.MNIST) -> None:
        write_mnist(Path(self.raw_folder))
        (Path(self.raw_folder) / "train-images-idx3-ubyte.gz").write_bytes(b"archive")

    monkeypatch.setattr(torchvision.datasets.mnist.MNIST, "download", fake_download)
    loaded = data.load("mnist", root=tmp_path, download=True)
    assert loaded.train_x.shape == (12, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(MNIST_FILES)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Truncated and corrupt files: the error names the file.


def test_a_truncated_idx_file_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    content = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(content[:-100])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte is truncated") as error:
        data.load("mnist", root=tmp_path, download=False)
    assert "delete it and get it again" in str(error.value)


def test_a_still_compressed_idx_file_is_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(gzip.compress(path.read_bytes()))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte is not an IDX file"):
        data.load("mnist", root=tmp_path, download=False)


def test_a_truncated_cifar_pickle_is_named(tmp_path: Path, skip_md5: None) -> None:
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataError, match=r"data_batch_3 is truncated or corrupt"):
        data.load("cifar10", root=tmp_path, download=False)


def test_a_cifar_file_failing_torchvisions_md5_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar100")  # readable, but not the real files: md5 differs
    with pytest.raises(data.DataError, match=r"cifar-100-python/train is corrupt \(its md5"):
        data.load("cifar100", root=tmp_path, download=False)


def test_a_truncated_svhn_mat_is_named(tmp_path: Path, skip_md5: None) -> None:
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(data.DataError, match=r"test_32x32\.mat is truncated or corrupt"):
        data.load("svhn", root=tmp_path, download=False)


def test_images_of_the_wrong_size_are_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", size=20)
    with pytest.raises(data.DataError, match=r"shape \(1, 20, 20\), expected uint8 \(1, 28, 28\)"):
        data.load("mnist", root=tmp_path, download=False)


def test_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist(raw)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 12, 3, 4])))
    with pytest.raises(data.DataError, match=r"test files of mnist .* labels outside 0\.\.9"):
        data.load("mnist", root=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# Augmentation.


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def window_offsets(out: torch.Tensor, x: torch.Tensor, spec: data.Dataset, flipped: bool) -> list:
    """For each sample, the (top, left) offsets of the black-padded input whose window is the
    output (or the mirrored output), or None where no window matches."""
    pad = data.CROP_PADDING
    black = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std, strict=True)])
    padded = black.view(1, -1, 1, 1).repeat(
        x.shape[0], 1, x.shape[2] + 2 * pad, x.shape[3] + 2 * pad
    )
    padded[:, :, pad:-pad, pad:-pad] = x
    windows = padded.unfold(2, x.shape[2], 1).unfold(3, x.shape[3], 1)  # N, C, 9, 9, H, W
    target = out.flip(3) if flipped else out
    match = (windows == target[:, :, None, None]).all(dim=(1, 4, 5))  # N, 9, 9
    offsets = []
    for sample in match:
        found = sample.nonzero().tolist()
        offsets.append(tuple(found[0]) if found else None)
    return offsets


def test_mnist_is_not_augmented() -> None:
    x = torch.randn(8, 1, 28, 28)
    for name in ("mnist", "fashion-mnist"):
        assert not data.spec(name).augments
        assert data.spec(name).augment(x, generator(0)) is x


@pytest.mark.parametrize("name", ["svhn", "cifar10", "cifar100"])
def test_augment_keeps_shape_and_is_deterministic_per_generator(name: str) -> None:
    spec = data.spec(name)
    x = torch.randn(16, 3, 32, 32)
    rng_before = torch.get_rng_state()
    first = spec.augment(x, generator(3))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, spec.augment(x, generator(3)))
    assert not torch.equal(first, spec.augment(x, generator(4)))
    assert not torch.equal(first, x)
    assert torch.equal(torch.get_rng_state(), rng_before)  # only the given generator is used
    # Same generator, consecutive calls: different draws (the state advances).
    shared = generator(3)
    assert not torch.equal(spec.augment(x, shared), spec.augment(x, shared))


def test_svhn_crops_with_black_padding_and_never_mirrors() -> None:
    spec = data.spec("svhn")
    x = torch.randn(128, 3, 32, 32)  # random images are asymmetric: a mirror cannot match
    out = spec.augment(x, generator(0))
    offsets = window_offsets(out, x, spec, flipped=False)
    assert None not in offsets  # every output is an unmirrored window of the padded image
    assert {top for top, _ in offsets} == set(range(9))  # shifts cover -4..4
    assert {left for _, left in offsets} == set(range(9))
    assert window_offsets(out, x, spec, flipped=True) == [None] * 128


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_crops_and_flips_some_images(name: str) -> None:
    spec = data.spec(name)
    x = torch.randn(128, 3, 32, 32)
    out = spec.augment(x, generator(1))
    plain = window_offsets(out, x, spec, flipped=False)
    mirrored = window_offsets(out, x, spec, flipped=True)
    assert all((p is None) != (m is None) for p, m in zip(plain, mirrored, strict=True))
    flipped_count = sum(m is not None for m in mirrored)
    assert 30 < flipped_count < 98  # about half, per sample
    assert {o[0] for o in plain + mirrored if o is not None} == set(range(9))


# ---------------------------------------------------------------------------------------------
# The real Fashion-MNIST, from Debian's dataset-fashion-mnist (CI installs it).


def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    package = data.spec("fashion-mnist").debian_dir
    assert package is not None
    assert (package / "train-images-idx3-ubyte.gz").is_file(), (
        f"{package} is missing: install the Debian package dataset-fashion-mnist "
        "(scripts/system-deps.sh does)"
    )
    loaded = data.load("fashion-mnist", root=tmp_path, download=False)
    assert loaded.train_x.shape == (60_000, 1, 28, 28)
    assert loaded.test_x.shape == (10_000, 1, 28, 28)
    assert loaded.train_y.bincount().tolist() == [6_000] * 10
    assert loaded.test_y.bincount().tolist() == [1_000] * 10
    # The documented mean/std really normalize the training set.
    assert abs(loaded.train_x.mean().item()) < 0.01
    assert abs(loaded.train_x.std().item() - 1) < 0.01
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Datasets as objects: a new dataset is one registered object; nothing looks at a name.


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, data.Dataset]:
    """A copy of the registry for this test, so what it registers is gone afterwards."""
    copy = dict(data.REGISTRY)
    monkeypatch.setattr(data, "REGISTRY", copy)
    return copy


KMNIST = data.IdxDataset(
    name="kmnist", num_classes=10, input_shape=(1, 28, 28), train_size=60_000, test_size=10_000,
    mean=(0.1918,), std=(0.3483,), folder="KMNIST/raw",
    torchvision_class=torchvision.datasets.KMNIST,
)  # fmt: skip


def test_a_registered_torchvision_dataset_loads_without_touching_data(
    tmp_path: Path, registry: dict[str, data.Dataset]
) -> None:
    assert data.register(KMNIST) is KMNIST
    assert data.names()[-1] == "kmnist" and data.spec("kmnist") is KMNIST
    arrays = write_mnist(tmp_path / "KMNIST" / "raw")
    loaded = data.load("kmnist", root=tmp_path, download=False)
    assert loaded.spec is KMNIST
    assert loaded.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    torch.testing.assert_close(
        loaded.test_x, normalized(arrays["t10k-images-idx3-ubyte"][:, None], "kmnist")
    )
    with pytest.raises(data.DataError) as error:
        data.load("kmnist", root=tmp_path / "empty", download=False)
    message = str(error.value)
    assert str(tmp_path / "empty" / "KMNIST" / "raw") in message
    assert "torchvision.datasets.KMNIST" in message and "apt-get" not in message


@dataclasses.dataclass(frozen=True, kw_only=True)
class NpzDataset(data.Dataset):
    """A user's dataset: one .npz file, read by its own code (no torchvision, no download)."""

    files: tuple[str, ...] = ("tiny.npz",)

    def read(self, root: Path) -> data.Arrays:
        with np.load(self.files_in(root) / self.files[0]) as arrays:
            return tuple(torch.from_numpy(arrays[k]) for k in ("x", "y", "tx", "ty"))  # type: ignore[return-value]


TINY = NpzDataset(
    name="tiny", num_classes=3, input_shape=(3, 8, 8), train_size=6, test_size=2,
    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop=True, flip=True, folder="tiny",
)  # fmt: skip


def test_a_user_dataset_needs_only_its_facts_and_read(
    tmp_path: Path, registry: dict[str, data.Dataset]
) -> None:
    data.register(TINY)
    with pytest.raises(data.DataError, match="there is no download for it") as error:
        data.load("tiny", root=tmp_path, download=True)
    assert f"put the files in {tmp_path / 'tiny'}" in str(error.value)
    assert "torchvision" not in str(error.value)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    tx = rng.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8)
    (tmp_path / "tiny").mkdir()
    np.savez(tmp_path / "tiny" / "tiny.npz", x=x, y=np.arange(6) % 3, tx=tx, ty=np.array([2, 0]))
    loaded = data.load("tiny", root=tmp_path)
    torch.testing.assert_close(loaded.train_x, normalized(x, "tiny"))
    assert loaded.test_y.tolist() == [2, 0] and loaded.test_y.dtype == torch.int64
    assert TINY.augments
    out = TINY.augment(loaded.train_x, generator(0))
    assert out.shape == loaded.train_x.shape and not torch.equal(out, loaded.train_x)

    data.clear_cache()
    (tmp_path / "tiny" / "tiny.npz").write_bytes(b"not a zip file")
    with pytest.raises(data.DataError, match=r"could not read tiny from .*tiny: ") as error:
        data.load("tiny", root=tmp_path)
    assert "delete it and get it again" in str(error.value)


def test_register_refuses_a_different_dataset_under_a_taken_name(
    registry: dict[str, data.Dataset],
) -> None:
    data.register(KMNIST)
    data.register(dataclasses.replace(KMNIST))  # an equal object is no conflict
    other = dataclasses.replace(KMNIST, mean=(0.2,))
    with pytest.raises(ConfigError, match="a different dataset named 'kmnist'") as error:
        data.register(other)
    assert "choose another name, or pass replace=True" in str(error.value)
    with pytest.raises(ConfigError, match="'mnist'"):
        data.register(dataclasses.replace(KMNIST, name="mnist"))
    assert data.register(other, replace=True) is data.spec("kmnist") is other


def test_a_dataset_needs_one_mean_and_std_per_channel() -> None:
    with pytest.raises(ConfigError, match="'bad' has 3 channels but 1 means and 1 standard"):
        dataclasses.replace(TINY, name="bad", mean=(0.5,), std=(0.2,))


def test_nothing_branches_on_a_dataset_name() -> None:
    """Each built-in name appears once in the package's code: in its own object."""
    source = "\n".join(p.read_text() for p in Path(data.__file__).parent.glob("*.py"))
    for name in data.names():
        assert source.count(f'"{name}"') == 1, name
    assert re.search(r"\.name\s*(==|!=|\bin\b)", source) is None


# ---------------------------------------------------------------------------------------------
# Augmentation is the same as before datasets became objects, bit for bit.


def reference_augment(x: torch.Tensor, spec: data.Dataset, gen: torch.Generator) -> torch.Tensor:
    """``data.augment(x, spec, generator)`` as it was written before this refactor."""
    if spec.crop:
        n, c, h, w = x.shape
        pad = data.CROP_PADDING
        values = [-m / s for m, s in zip(spec.mean, spec.std, strict=True)]
        black = torch.tensor(values, dtype=x.dtype, device=x.device)
        padded = black.view(1, c, 1, 1).repeat(n, 1, h + 2 * pad, w + 2 * pad)
        padded[:, :, pad : pad + h, pad : pad + w] = x
        top = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=x.device)
        rows = (top.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        x = padded.gather(2, rows.expand(n, c, h, w + 2 * pad))
        cols = (left.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        x = x.gather(3, cols.expand(n, c, h, w))
    if spec.flip:
        flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"])
def test_augment_is_bit_for_bit_what_it_was(name: str) -> None:
    spec = data.spec(name)
    assert spec.augments == (spec.crop or spec.flip)
    x = torch.randn(64, *spec.input_shape, generator=generator(7))
    for seed in (0, 1, 12345):
        expected = reference_augment(x, spec, generator(seed))
        assert torch.equal(spec.augment(x, generator(seed)), expected)
    # Consecutive draws from one generator match too (the state advances the same way).
    mine, theirs = generator(3), generator(3)
    for _ in range(3):
        assert torch.equal(spec.augment(x, mine), reference_augment(x, spec, theirs))
    assert torch.equal(mine.get_state(), theirs.get_state())
