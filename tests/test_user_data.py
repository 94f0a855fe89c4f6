"""A user's own datasets: .npz files, ImageFolder folders, import paths and entry points, read
by the real code paths from small files written in ``tmp_path``; the validation split; and a
clear DataError, naming the file and the fix, for every kind of bad data."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from annealbench import data
from annealbench.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty cache and a registry of this test's own (what it defines is gone after)."""
    monkeypatch.setattr(data, "REGISTRY", dict(data.REGISTRY))
    data.clear_cache()
    yield
    data.clear_cache()


def images(n: int, shape: tuple[int, ...] = (6, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """``arrays`` saved with numpy, the mtime moved on a second (an edit is always seen)."""
    old = path.stat().st_mtime_ns if path.exists() else None
    np.savez(path, **arrays)
    if old is not None:
        os.utime(path, ns=(old + 10**9, old + 10**9))
    return path


def toy(path: Path, n_train: int = 12, n_test: int = 4, classes: int = 3) -> dict[str, np.ndarray]:
    """A valid image .npz: uint8 N×H×W, labels 0..classes-1."""
    arrays = {
        "x_train": images(n_train),
        "y_train": np.arange(n_train) % classes,
        "x_test": images(n_test, seed=1),
        "y_test": np.arange(n_test) % classes,
    }
    write_npz(path, **arrays)
    return arrays


def tabular(path: Path, n: int = 50) -> dict[str, np.ndarray]:
    """Float rows whose first feature is the example's index (to follow examples around)."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (n, 4)).astype(np.float32)
    x[:, 0] = np.arange(n)
    x[:, 3] = 7.0  # a constant feature: its std becomes 1
    arrays = {
        "x_train": x,
        "y_train": np.arange(n) % 2,
        "x_test": rng.normal(size=(5, 4)).astype(np.float32),
        "y_test": np.array([0, 1, 1, 0, 1]),
    }
    write_npz(path, **arrays)
    return arrays


def raises(match: str, call: object, *args: object, **kwargs: object) -> str:
    """``call(*args)`` raises a DataError matching ``match`` (a regex); its message."""
    with pytest.raises(DataError, match=match) as error:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(error.value)


def where(path: Path) -> str:
    return re.escape(str(path))


# ---------------------------------------------------------------------------------------------
# .npz files


def test_an_npz_of_gray_images_round_trips(tmp_path: Path) -> None:
    arrays = toy(tmp_path / "toy.npz")
    spec = data.spec(str(tmp_path / "toy.npz"))
    assert isinstance(spec, data.UserDataset)
    assert spec.input_shape == (1, 6, 5) and spec.num_classes == 3
    assert (spec.train_size, spec.test_size) == (12, 4)
    assert not spec.augments and spec.to_config() == {
        "name": str(tmp_path / "toy.npz"),
        "source": str(tmp_path / "toy.npz"),
        "augment": [],
    }
    scaled = arrays["x_train"] / 255
    np.testing.assert_allclose(spec.mean, [scaled.mean()], rtol=1e-12)
    np.testing.assert_allclose(spec.std, [scaled.std()], rtol=1e-12)

    loaded = data.load(str(tmp_path / "toy.npz"))
    assert loaded.spec is spec and loaded.val_x is None and loaded.val_y is None
    for x, key in ((loaded.train_x, "x_train"), (loaded.test_x, "x_test")):
        expected = (arrays[key][:, None] / 255 - scaled.mean()) / scaled.std()
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 6, 5)
        torch.testing.assert_close(x, torch.from_numpy(expected).float())
    assert loaded.train_y.dtype == torch.int64
    assert loaded.train_y.tolist() == arrays["y_train"].tolist()
    assert loaded.test_y.tolist() == arrays["y_test"].tolist()
    assert data.load(tmp_path / "toy.npz") is loaded  # cached; a Path works too


def test_tabular_floats_are_normalized_per_feature_and_not_scaled(tmp_path: Path) -> None:
    arrays = tabular(tmp_path / "rows.npz")
    spec = data.spec(str(tmp_path / "rows.npz"))
    assert spec.input_shape == (4,) and spec.num_classes == 2
    x = arrays["x_train"].astype(np.float64)
    std = x.std(axis=0)
    std[3] = 1.0  # the constant feature
    np.testing.assert_allclose(spec.mean, x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(spec.std, std, rtol=1e-12)
    loaded = data.load(str(tmp_path / "rows.npz"))
    assert loaded.train_x.shape == (50, 4)
    torch.testing.assert_close(loaded.train_x, torch.from_numpy((x - x.mean(0)) / std).float())
    expected_test = (arrays["x_test"] - x.mean(0)) / std
    torch.testing.assert_close(loaded.test_x, torch.from_numpy(expected_test).float())
    assert loaded.train_x[:, 3].abs().max() == 0  # constant: (7 - 7) / 1


def test_facts_are_json_ready_and_the_fingerprint_follows_the_contents(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    arrays = toy(path)
    facts = data.spec(str(path)).facts()
    assert json.loads(json.dumps(facts)) == facts
    assert set(facts) == {
        "num_classes", "input_shape", "train_size", "test_size", "mean", "std", "fingerprint"
    }  # fmt: skip
    assert facts["input_shape"] == [1, 6, 5] and facts["train_size"] == 12
    assert re.fullmatch(r"[0-9a-f]{64}", facts["fingerprint"])
    assert data.fingerprint(*arrays.values()) == facts["fingerprint"]

    arrays["x_train"][3, 2, 1] ^= 1  # one value changes: the file is read again
    write_npz(path, **arrays)
    changed = data.spec(str(path)).facts()
    assert changed["fingerprint"] != facts["fingerprint"]
    arrays["x_train"][3, 2, 1] ^= 1
    write_npz(path, **arrays)
    assert data.spec(str(path)).facts()["fingerprint"] == facts["fingerprint"]

    builtin = data.spec("cifar10").facts()
    assert builtin["fingerprint"] is None and builtin["train_size"] == 50_000
    assert builtin["input_shape"] == [3, 32, 32] and builtin["num_classes"] == 10
    assert data.spec("cifar10").to_config() is None


def test_image_layouts_and_dtypes(tmp_path: Path) -> None:
    rgb_last = images(6, (7, 5, 3))
    y = np.arange(6) % 2
    write_npz(tmp_path / "last.npz", x_train=rgb_last, y_train=y, x_test=rgb_last[:2], y_test=y[:2])
    first = rgb_last.transpose(0, 3, 1, 2)
    write_npz(tmp_path / "first.npz", x_train=first, y_train=y, x_test=first[:2], y_test=y[:2])
    last, channel_first = data.spec(tmp_path / "last.npz"), data.spec(tmp_path / "first.npz")
    assert last.input_shape == channel_first.input_shape == (3, 7, 5)
    assert last.facts() == channel_first.facts()  # the same data, the same fingerprint
    torch.testing.assert_close(
        data.load(tmp_path / "last.npz").train_x, data.load(tmp_path / "first.npz").train_x
    )
    np.testing.assert_allclose(last.mean, (first / 255).mean(axis=(0, 2, 3)), rtol=1e-12)

    # The second dimension in {1, 3, 4} wins: (N, 4, 4, 3) is channel-first.
    square = images(4, (4, 4, 3))
    write_npz(tmp_path / "sq.npz", x_train=square, y_train=y[:4], x_test=square, y_test=y[:4])
    assert data.spec(tmp_path / "sq.npz").input_shape == (4, 4, 3)

    # Floats are used as they are (no 1/255); wider integers too.
    floats = rgb_last.astype(np.float64)
    write_npz(tmp_path / "f.npz", x_train=floats, y_train=y, x_test=floats[:2], y_test=y[:2])
    np.testing.assert_allclose(
        data.spec(tmp_path / "f.npz").mean, first.mean(axis=(0, 2, 3)), rtol=1e-12
    )
    labels = y.astype(np.float32)  # whole floats and an (N, 1) column are class indices
    write_npz(
        tmp_path / "c.npz", x_train=first, y_train=labels[:, None], x_test=first[:2], y_test=y[:2]
    )
    assert data.load(tmp_path / "c.npz").train_y.tolist() == y.tolist()


# ---------------------------------------------------------------------------------------------
# ImageFolder folders


def png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_folder(root: Path, layout: dict[str, dict[str, list[np.ndarray]]]) -> Path:
    """``layout[split][class]`` is a list of images, saved as PNGs."""
    for split, classes in layout.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        for name, pictures in classes.items():
            (root / split / name).mkdir(exist_ok=True)
            for i, pixels in enumerate(pictures):
                png(root / split / name / f"{i:03d}.png", pixels)
    return root


def test_an_image_folder_of_gray_pngs(tmp_path: Path) -> None:
    gray = [images(1, (4, 5), seed=s)[0] for s in range(7)]
    root = image_folder(
        tmp_path / "digits",
        {
            "train": {"b": gray[0:2], "a": gray[2:4], "c": gray[4:5]},
            "test": {"c": gray[5:6], "a": gray[6:7]},  # no b: test may lack a class
        },
    )
    spec = data.spec(str(root))
    assert spec.input_shape == (1, 4, 5) and spec.num_classes == 3
    loaded = data.load(str(root))
    # Classes by sorted name (a=0, b=1, c=2); within one, files by name.
    assert loaded.train_y.tolist() == [0, 0, 1, 1, 2]
    assert loaded.test_y.tolist() == [0, 2]  # the test split's c is the training split's c
    raw = np.stack([gray[2], gray[3], gray[0], gray[1], gray[4]])[:, None] / 255
    expected = (raw - raw.mean()) / raw.std()
    torch.testing.assert_close(loaded.train_x, torch.from_numpy(expected).float())


def test_an_image_folder_with_color_reads_every_image_as_rgb(tmp_path: Path) -> None:
    color = images(3, (6, 6, 3))
    gray = images(2, (6, 6), seed=5)
    root = image_folder(
        tmp_path / "pics",
        {"train": {"cat": [color[0], gray[0]], "dog": [color[1]]}, "test": {"dog": [gray[1]]}},
    )
    loaded = data.load(root)
    assert loaded.spec.input_shape == (3, 6, 6) and loaded.train_y.tolist() == [0, 0, 1]
    pixels = np.stack([color[0], np.repeat(gray[0][:, :, None], 3, axis=2), color[1]])
    np.testing.assert_allclose(loaded.spec.mean, (pixels / 255).mean(axis=(0, 1, 2)), rtol=1e-12)


def test_image_folder_problems_name_the_folder_or_file(tmp_path: Path) -> None:
    picture = images(1, (4, 4))[0]
    no_split = image_folder(tmp_path / "a", {"train": {"x": [picture], "y": [picture]}})
    raises(rf"{where(no_split)} has no test/ subfolder .*train/<class>", data.spec, no_split)

    empty = image_folder(
        tmp_path / "b", {"train": {"x": [picture], "y": []}, "test": {"x": [picture]}}
    )
    raises(rf"{where(empty / 'train' / 'y')} holds no images", data.spec, empty)

    one = image_folder(tmp_path / "c", {"train": {"x": [picture]}, "test": {"x": [picture]}})
    raises(rf"{where(one / 'train')} has 1 class folder .*at least 2", data.spec, one)

    extra = image_folder(
        tmp_path / "d",
        {"train": {"x": [picture], "y": [picture]}, "test": {"x": [picture], "z": [picture]}},
    )
    raises(
        rf"{where(extra / 'test')} has class folders \['z'\] that .*train lacks", data.spec, extra
    )

    sizes = image_folder(
        tmp_path / "e",
        {"train": {"x": [picture], "y": [images(1, (4, 6))[0]]}, "test": {"x": [picture]}},
    )
    odd = sizes / "train" / "y" / "000.png"
    raises(rf"{where(odd)} is 6×4 pixels but .* is 4×4; all images must have one", data.spec, sizes)

    classless = tmp_path / "f"
    (classless / "train").mkdir(parents=True)
    (classless / "test").mkdir()
    raises(rf"{where(classless / 'train')} has no class folders", data.spec, classless)

    broken = image_folder(
        tmp_path / "g", {"train": {"x": [picture], "y": [picture]}, "test": {"x": [picture]}}
    )
    (broken / "train" / "y" / "000.png").write_bytes(b"not a png")
    raises(
        rf"{where(broken / 'train' / 'y' / '000.png')} is not a readable image", data.spec, broken
    )


# ---------------------------------------------------------------------------------------------
# Import paths and entry points


def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)


FACTORIES = """
    import numpy as np
    import torch

    CALLS = []

    def make():
        CALLS.append(1)
        x = np.arange(40, dtype=np.float32).reshape(10, 4)
        return x, np.arange(10) % 2, x[:3].copy(), np.array([1, 0, 1])

    def make_dict():
        x = torch.arange(8 * 9, dtype=torch.uint8).reshape(8, 3, 3)
        return {"x_train": x, "y_train": torch.arange(8) % 4, "x_test": x[:2],
                "y_test": torch.tensor([3, 2])}

    NOT_CALLABLE = 3

    def three():
        return 1, 2, 3

    def text():
        return "data"

    def fails():
        raise RuntimeError("no network")
"""


def test_an_import_path_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module(tmp_path, monkeypatch, "user_factories", FACTORIES)
    spec = data.spec("user_factories:make")
    assert spec.name == "user_factories:make" and spec.input_shape == (4,)
    assert spec.num_classes == 2 and spec.train_size == 10
    assert data.canonical("user_factories:make") == "user_factories:make"
    loaded = data.load("user_factories:make")
    assert loaded.train_x.shape == (10, 4) and loaded.test_y.tolist() == [1, 0, 1]
    data.spec("user_factories:make")
    assert len(__import__("user_factories").CALLS) == 1  # read once per process

    tensors = data.spec("user_factories:make_dict")
    assert tensors.input_shape == (1, 3, 3) and tensors.num_classes == 4
    assert data.load("user_factories:make_dict").test_y.tolist() == [3, 2]


def test_import_path_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module(tmp_path, monkeypatch, "user_factories2", FACTORIES)
    message = raises(
        r"import path no_such_module_x:make: cannot import", data.spec, "no_such_module_x:make"
    )
    assert "PYTHONPATH" in message and "run from that folder" in message
    raises(
        r"user_factories2:missing: .* has no attribute 'missing'",
        data.spec,
        "user_factories2:missing",
    )
    raises(
        r"user_factories2:NOT_CALLABLE: NOT_CALLABLE is a int, not a function",
        data.spec,
        "user_factories2:NOT_CALLABLE",
    )
    raises(
        r"user_factories2:three returned a tuple of 3 items; return \(x_train",
        data.spec,
        "user_factories2:three",
    )
    raises(r"user_factories2:text returned a str;", data.spec, "user_factories2:text")
    raises(
        r"user_factories2:fails: calling it raised RuntimeError: no network",
        data.spec,
        "user_factories2:fails",
    )
    module(tmp_path, monkeypatch, "user_broken", "import no_such_dependency_y\n")
    raises(
        r"user_broken:make: importing user_broken raised ModuleNotFoundError",
        data.spec,
        "user_broken:make",
    )


def test_a_module_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd_factory.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))]
    )
    monkeypatch.delitem(__import__("sys").modules, "cwd_factory", raising=False)
    assert data.spec("cwd_factory:make").num_classes == 2


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    group = "annealbench.datasets"
    found = [importlib.metadata.EntryPoint(n, v, group) for n, v in values.items()]

    def entry_points(**kwargs: str) -> list[importlib.metadata.EntryPoint]:
        assert kwargs == {"group": group}
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_entry_points_register_datasets_on_first_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module(tmp_path, monkeypatch, "user_factories3", FACTORIES)
    module(
        tmp_path,
        monkeypatch,
        "user_plugin",
        """
        import dataclasses
        from annealbench import data

        GRAY = dataclasses.replace(data.spec("mnist"), name="whatever")
        """,
    )
    fake_entry_points(
        monkeypatch,
        toy="user_factories3:make",
        gray="user_plugin:GRAY",
        bad="user_plugin:dataclasses",
    )
    assert "toy" not in data.names()
    with pytest.raises(
        ConfigError, match="unknown dataset 'nope'; valid datasets: .*bad, gray, toy"
    ):
        data.spec("nope")
    spec = data.spec("toy")
    assert spec.name == "toy" and spec.num_classes == 2 and data.names()[-1] == "toy"
    assert data.spec("toy") is spec and data.canonical("toy") == "toy"
    assert spec.to_config() == {"name": "toy", "source": "toy", "augment": []}
    gray = data.spec("gray")
    assert gray.name == "gray" and gray.input_shape == (1, 28, 28) and "gray" in data.names()
    raises(r"entry point 'bad' .* loads a module; point it at a Dataset", data.load, "bad")
    defined = data.define("toy-copy", "toy")  # an entry point's function as a source
    assert defined.to_config() == {"name": "toy-copy", "source": "toy", "augment": []}
    assert defined.fingerprint == spec.fingerprint  # type: ignore[attr-defined]
    imported = data.define("imported", "user_factories3:make_dict", augment=["crop"])
    assert imported.crop and not imported.flip and imported.input_shape == (1, 3, 3)


# ---------------------------------------------------------------------------------------------
# Names, references and definitions


def test_canonical_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_bytes(b"")
    assert data.canonical("mnist") == "mnist"
    assert data.canonical("pkg.mod:make") == "pkg.mod:make"
    assert data.canonical("some-name") == "some-name"  # unknown names are left to spec()
    assert data.canonical("x.npz") == str(tmp_path / "x.npz")
    assert data.canonical("sub/x") == str(tmp_path / "sub" / "x")
    assert data.canonical("./x") == str(tmp_path / "x")
    assert data.canonical("folder") == str(tmp_path / "folder")  # exists: a path
    assert data.canonical("plain") == str(tmp_path / "plain")
    assert data.canonical(Path("folder")) == str(tmp_path / "folder")
    assert data.canonical("~/d.npz") == str(Path.home().resolve() / "d.npz")
    (tmp_path / "link").symlink_to(tmp_path / "folder")
    assert data.canonical("link") == str(tmp_path / "folder")
    with pytest.raises(ConfigError):
        data.canonical(3)  # type: ignore[arg-type]


def test_unknown_names_list_the_valid_ones_and_the_reference_forms() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; valid datasets: ") as error:
        data.spec("imagenet")
    message = str(error.value)
    assert all(name in message for name in data.names())
    assert ".npz file" in message and "train/ and test/" in message and "module:function" in message
    assert data.names() == ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"]


def test_define_from_config_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "toy.npz"
    toy(path)
    monkeypatch.chdir(tmp_path)
    dataset = data.define("toy", "toy.npz", augment=["flip", "crop"])
    assert data.spec("toy") is dataset and "toy" in data.names()
    assert dataset.crop and dataset.flip and dataset.augments
    config = dataset.to_config()
    assert config == {"name": "toy", "source": str(path), "augment": ["crop", "flip"]}
    assert json.loads(json.dumps(config)) == config
    loaded = data.load("toy")
    out = dataset.augment(loaded.train_x, torch.Generator().manual_seed(0))
    assert out.shape == loaded.train_x.shape

    assert data.define("toy", str(path), augment=("crop", "flip")) == dataset  # no conflict
    with pytest.raises(ConfigError, match="a different dataset named 'toy'"):
        data.define("toy", str(path))
    assert data.define("toy", str(path), replace=True).augments is False

    # Another process: an empty registry and cache, rebuilt from the config alone.
    monkeypatch.setattr(data, "REGISTRY", {d.name: d for d in data.TABLE_1})
    data.clear_cache()
    rebuilt = data.from_config(config)
    assert rebuilt == dataset and data.spec("toy") is rebuilt
    plain = data.spec(str(path))
    assert data.from_config(plain.to_config()) is plain and plain.name not in data.names()

    # An edited file is read again, under its defined name too.
    arrays = toy(path, n_train=15)
    assert data.spec("toy").train_size == 15
    assert data.spec("toy").facts()["fingerprint"] == data.fingerprint(*arrays.values())


def test_define_refuses_bad_definitions(tmp_path: Path) -> None:
    rows = tmp_path / "rows.npz"
    tabular(rows)
    toy(tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match="crop and flip augment images only"):
        data.define("rows", rows, augment=["flip"])
    with pytest.raises(ConfigError, match="unknown augmentation 'rotate'; valid: crop, flip"):
        data.define("toy", tmp_path / "toy.npz", augment=["rotate"])
    with pytest.raises(ConfigError, match="'mnist' is a built-in dataset"):
        data.define("mnist", tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match="looks like a path"):
        data.define("my/data", tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match="read from its own files"):
        data.define("mine", "cifar10")
    with pytest.raises(ConfigError, match="a dataset config is"):
        data.from_config({"name": "x"})
    with pytest.raises(DataError):
        data.define("missing", tmp_path / "missing.npz")
    assert "rows" not in data.names() and "missing" not in data.names()  # nothing registered


# ---------------------------------------------------------------------------------------------
# The validation split


def test_the_validation_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "rows.npz")
    tabular(tmp_path / "rows.npz")
    whole = data.load(path)
    split = data.load(path, validation=10)
    ids = lambda x: x[:, 0].mul(whole.spec.std[0]).add(whole.spec.mean[0]).round().long().tolist()  # noqa: E731
    held, kept = ids(split.val_x), ids(split.train_x)
    assert len(held) == 10 and len(kept) == 40 and not set(held) & set(kept)
    assert sorted(held + kept) == list(range(50))
    assert kept == sorted(kept) and held == sorted(held)  # training order kept
    generator = torch.Generator().manual_seed(data.VALIDATION_SEED)
    assert held == sorted(torch.randperm(50, generator=generator)[:10].tolist())
    assert split.val_y.tolist() == [i % 2 for i in held]
    assert split.train_y.tolist() == [i % 2 for i in kept]
    torch.testing.assert_close(split.test_x, whole.test_x)
    assert split.spec is whole.spec  # the statistics are the whole training split's

    for seed in (0, 1, 12345):  # no run's seed, nor the global generator, moves it
        torch.manual_seed(seed)
        data.clear_cache()
        assert ids(data.load(path, validation=10).val_x) == held

    assert len(data.load(path, validation=0.25).val_y) == 12  # round(12.5), Python's rounding
    assert len(data.load(path, validation=0.001).val_y) == 1  # at least one
    subset = data.load(path, subset=30, validation=0.1)
    assert len(subset.val_y) == 3 and len(subset.train_y) == 27
    assert set(ids(subset.val_x)) | set(ids(subset.train_x)) == set(range(30))


def test_validation_sizes_and_errors(tmp_path: Path) -> None:
    assert data.validation_size(None, 10) == 0
    assert data.validation_size(3, 10) == 3
    assert data.validation_size(np.int64(3), 10) == 3
    assert data.validation_size(0.26, 10) == 3 and data.validation_size(0.01, 10) == 1
    for bad in (0, -1, 1.0, 0.0, -0.5, True, math.nan, "0.1"):
        with pytest.raises(ConfigError, match="validation must be a number of training examples"):
            data.validation_size(bad, 10)  # type: ignore[arg-type]
    for bad in (10, 11, 0.99):
        with pytest.raises(ConfigError, match="leaves none to train on; give 1 to 9 examples"):
            data.validation_size(bad, 10)
    path = str(tmp_path / "toy.npz")
    toy(tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match="validation must be"):
        data.load(path, validation=0)
    with pytest.raises(ConfigError, match="validation 12 of 12 training examples"):
        data.load(path, validation=12)
    with pytest.raises(ConfigError, match="validation 5 of 5 training examples"):
        data.load(path, subset=5, validation=5)


# ---------------------------------------------------------------------------------------------
# Bad data: a DataError naming the file, the problem and the fix; nothing written


def test_missing_files_and_arrays(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    raises(rf"{where(missing)}: no such file or folder", data.spec, str(missing))
    raises(rf"{where(missing)}: no such file or folder", data.load, str(missing))
    raises(rf"{where(tmp_path / 'gone')}: no such file or folder", data.spec, tmp_path / "gone")

    partial = write_npz(tmp_path / "partial.npz", x_train=images(3), y_train=np.arange(3))
    message = raises(
        rf"{where(partial)} lacks the arrays x_test, y_test \(it has x_train, y_train\)",
        data.spec,
        partial,
    )
    assert "numpy.savez" in message

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    raises(
        rf"{where(tmp_path / 'junk.npz')} is not a readable .npz file",
        data.spec,
        tmp_path / "junk.npz",
    )
    np.save(tmp_path / "one.npy", images(2))
    raises(r"holds a single array \(a .npy file\)", data.spec, tmp_path / "one.npy")
    objects = tmp_path / "objects.npz"
    np.savez(
        objects,
        x_train=np.array([{}], dtype=object),
        y_train=np.arange(1),
        x_test=images(1),
        y_test=np.arange(1),
    )
    raises(
        rf"{where(objects)}: its arrays could not be read .*no Python objects", data.spec, objects
    )


GOOD = {
    "x_train": images(6),
    "y_train": np.arange(6) % 3,
    "x_test": images(3),
    "y_test": np.arange(3),
}
INDICES = r".*give integer class indices 0..C-1"
BAD_ARRAYS = [
    ({"y_train": np.arange(5) % 3}, r"x_train holds 6 examples but y_train 5 labels"),
    ({"y_train": np.array([0, 1, 2, 0, 1.5, 2])},
     r"y_train holds 1 labels that are not whole numbers \(such as 1.5\)" + INDICES),
    ({"y_test": np.array([0, -1, 2])}, r"y_test holds 1 negative labels" + INDICES),
    ({"y_train": np.eye(3)[np.arange(6) % 3]},
     r"y_train has shape \(6, 3\) \(one-hot rows\?" + INDICES),
    ({"y_train": np.zeros(6, dtype=int)},
     r"y_train holds only class 0; a classifier needs at least 2 classes"),
    ({"y_train": np.arange(6) % 3 + 1}, r"y_train has no examples of classes \[0\]"),
    ({"y_test": np.array([0, 3, 5])}, r"y_test has classes \[3, 5\] that y_train lacks"),
    ({"x_test": images(3, (6, 4))},
     r"x_train holds examples of shape \(6, 5\) but x_test \(6, 4\)"),
    ({"x_train": np.zeros((6, 5, 5, 5)), "x_test": np.zeros((3, 5, 5, 5))},
     r"x_train has shape \(6, 5, 5, 5\): neither channel-first"),
    ({"x_train": np.zeros(6), "x_test": np.zeros(3)}, r"x_train has shape \(6,\): not a layout"),
    ({"x_train": np.array(["a"] * 6)}, r"x_train holds <U1 values; give numbers"),
    ({"x_train": images(0), "y_train": np.arange(0)}, r"x_train is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "match"), BAD_ARRAYS)
def test_bad_arrays_are_named(tmp_path: Path, change: dict[str, np.ndarray], match: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **{**GOOD, **change})
    message = raises(rf"{where(path)}: {match}", data.spec, path)
    assert "\n" not in message
    target = tmp_path / "out" / "saved.npz"
    with pytest.raises(DataError, match=match):
        data.save_npz(target, *{**GOOD, **change}.values())
    assert not target.parent.exists() or list(target.parent.iterdir()) == []  # nothing written


def test_nan_and_infinite_inputs_are_counted(tmp_path: Path) -> None:
    x = np.ones((6, 4), dtype=np.float32)
    x[1, 2] = x[4, 0] = np.nan
    x[4, 1] = np.inf
    path = write_npz(tmp_path / "nan.npz", **{**GOOD, "x_train": x, "x_test": np.ones((3, 4))})
    raises(
        rf"{where(path)}: x_train holds 2 NaN and 1 infinite values \(in 2 examples, the first "
        r"at index 1\); replace or drop them",
        data.spec,
        path,
    )


def test_save_npz_writes_atomically_what_spec_reads(tmp_path: Path) -> None:
    x = torch.rand(8, 3, 4, 4)
    target = data.save_npz(
        tmp_path / "deep" / "saved.npz", x, torch.arange(8) % 2, x[:2], torch.tensor([0, 1])
    )
    assert target == tmp_path / "deep" / "saved.npz"
    assert [p.name for p in target.parent.iterdir()] == ["saved.npz"]  # no temporary left
    spec = data.spec(target)
    assert spec.input_shape == (3, 4, 4) and spec.train_size == 8
    assert spec.facts()["fingerprint"] == data.fingerprint(
        x, torch.arange(8) % 2, x[:2], torch.tensor([0, 1])
    )
