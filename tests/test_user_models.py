"""Users' own models: import paths ``module:factory``, entry points and ``models.register``;
batchability probes; every mistake a clear ConfigError. The user's modules are real files
written into a temporary folder on sys.path."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from annealbench import models
from annealbench.errors import ConfigError

NETS = """
    import torch
    from torch import nn

    BUILT = []


    def mlp(input_shape, num_classes):
        BUILT.append(tuple(input_shape))
        (features,) = input_shape
        return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes))


    def cnn(input_shape, num_classes):
        channels, height, width = input_shape
        return nn.Sequential(
            nn.Conv2d(channels, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * height * width, num_classes),
        )


    def with_batchnorm(input_shape, num_classes):
        (features,) = input_shape
        return nn.Sequential(nn.Linear(features, 8), nn.BatchNorm1d(8), nn.Linear(8, num_classes))


    class Scaled(nn.Module):
        def __init__(self, features, num_classes):
            super().__init__()
            self.linear = nn.Linear(features, num_classes)
            self.register_buffer("scale", torch.ones(features))

        def forward(self, x):
            return self.linear(x * self.scale)


    def with_buffer(input_shape, num_classes):
        return Scaled(input_shape[0], num_classes)


    def with_dropout(input_shape, num_classes):
        return nn.Sequential(nn.Dropout(0.5), nn.Linear(input_shape[0], num_classes))


    def wrong_outputs(input_shape, num_classes):
        return nn.Linear(input_shape[0], num_classes + 1)


    class Net(nn.Module):
        def __init__(self, input_shape, num_classes):
            super().__init__()
            self.linear = nn.Linear(input_shape[0], num_classes)

        def forward(self, x):
            return self.linear(x)

        @classmethod
        def build(cls, input_shape, num_classes):
            return cls(input_shape, num_classes)


    def raises(input_shape, num_classes):
        raise ValueError("too few features")


    def returns_dict(input_shape, num_classes):
        return {"layers": 2}


    def no_parameters(input_shape, num_classes):
        return nn.ReLU()


    not_callable = 3
    instance = nn.Linear(3, 2)  # draws from the RNG at import
"""
MODULES = ("usernets", "broken_nets", "needs_dep", "userpkg", "userpkg.nets", "cwd_nets")


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Write ``name.py`` (``a/b.py`` for ``a.b``) into a folder on sys.path; forgets the
    modules afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write_module(name: str, source: str) -> None:
        path = tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:
            if parent != Path("."):
                (tmp_path / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(source), encoding="utf-8")

    yield write_module
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def nets(write: Callable[[str, str], None]) -> None:
    write("usernets", NETS)


@pytest.fixture
def forget() -> Iterator[list[str]]:
    """Names to unregister after the test."""
    added: list[str] = []
    yield added
    for name in added:
        models.unregister(name)


# -- import paths ---------------------------------------------------------------------------


def test_an_import_path_builds_a_tabular_model(nets: None) -> None:
    model = models.build("usernets:mlp", (30,), 3)
    assert model(torch.zeros(4, 30)).shape == (4, 3)
    spec = models.spec("usernets:mlp")
    assert spec.name == "usernets:mlp"
    assert spec.paper_name == "mlp"
    assert spec.deep is False
    assert spec.has_batchnorm is None
    assert spec.input_size is None
    assert spec.description == "user model usernets:mlp"
    assert spec.origin == "import path"
    assert "usernets:mlp" not in models.names()


def test_an_import_path_builds_a_cnn_the_same_for_the_same_seed(nets: None) -> None:
    """The first build imports the module, whose ``instance`` draws from the RNG: that must
    not shift the first model."""
    states = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        states.append(models.build("usernets:cnn", (1, 8, 8), 4).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])
    model = models.build("usernets:cnn", torch.Size((1, 8, 8)), 4)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_nested_attributes_and_classes_are_factories(nets: None) -> None:
    assert isinstance(models.build("usernets:Net.build", (5,), 2), nn.Module)
    assert isinstance(models.build("usernets:Net", (5,), 2), nn.Module)
    assert models.spec("usernets:Net.build").paper_name == "build"


def test_the_factory_gets_a_tuple_of_ints(nets: None) -> None:
    models.build("usernets:mlp", [torch.tensor(7).item()], 2)
    assert sys.modules["usernets"].BUILT[-1] == (7,)


def test_a_spawned_process_rebuilds_the_same_model_from_the_path(
    nets: None, tmp_path: Path
) -> None:
    code = (
        "import sys, torch; from annealbench import models; torch.manual_seed(3); "
        "torch.save(models.build('usernets:mlp', (30,), 3).state_dict(), sys.argv[1])"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = tmp_path / "state.pt"
    subprocess.run([sys.executable, "-c", code, str(out)], env=env, check=True, cwd="/")
    torch.manual_seed(3)
    here = models.build("usernets:mlp", (30,), 3).state_dict()
    there = torch.load(out)
    assert all(torch.equal(here[k], there[k]) for k in here)


def test_a_module_in_the_working_folder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``annealbench`` command does not put the working folder on sys.path itself."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "cwd_nets.py").write_text(
        "from torch import nn\n\n"
        "def build(shape, classes):\n"
        "    return nn.Linear(shape[0], classes)\n"
    )
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(folder))])
    try:
        assert isinstance(models.build("cwd_nets:build", (4,), 2), nn.Linear)
    finally:
        sys.modules.pop("cwd_nets", None)


def test_count_flops_takes_user_models_and_tabular_shapes(nets: None) -> None:
    flops = models.count_flops("usernets:mlp", (30,), 3)
    assert flops.forward == 2 * (30 * 16 + 16 * 3)
    assert models.count_flops("nn2", (30,), 3).forward == 2 * (30 * 300 + 300 * 100 + 100 * 3)


# -- built-ins on tabular data --------------------------------------------------------------


@pytest.mark.parametrize("name", ["nn2", "nn3"])
def test_the_builtin_mlps_take_tabular_shapes(name: str) -> None:
    model = models.build(name, (30,), 3)
    assert next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features == 30
    assert model(torch.zeros(2, 30)).shape == (2, 3)


def test_convolutional_builtins_need_images() -> None:
    with pytest.raises(ConfigError, match=r"lenet4 is convolutional .*\(channels, height, width"):
        models.build("lenet4", (30,), 3)
    with pytest.raises(ConfigError, match=r"input_shape must be \(features,\) or"):
        models.build("nn2", (28, 28), 10)


# -- batchability ---------------------------------------------------------------------------


def test_a_plain_user_model_is_batchable(nets: None) -> None:
    assert models.batch_problem("usernets:mlp", (30,), 3) is None
    assert models.batch_problem("usernets:cnn", (1, 8, 8), 4) is None


def test_batchnorm_is_named(nets: None) -> None:
    assert models.batch_problem("usernets:with_batchnorm", (6,), 3) == (
        "usernets:with_batchnorm has BatchNorm (running statistics are not vmapped)"
    )


def test_buffers_are_named(nets: None) -> None:
    problem = models.batch_problem("usernets:with_buffer", (6,), 3)
    assert problem == (
        "usernets:with_buffer has buffers (scale), which batched training does not stack"
    )


def test_what_vmap_refuses_is_reported_in_one_line(nets: None) -> None:
    problem = models.batch_problem("usernets:with_dropout", (6,), 3)
    assert problem is not None
    assert problem.startswith("usernets:with_dropout cannot be vmapped: RuntimeError: ")
    assert "random" in problem
    assert "\n" not in problem


def test_the_probe_leaves_the_rng_alone_and_is_cached(nets: None) -> None:
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    assert models.batch_problem("usernets:mlp", (12,), 3) is None
    assert torch.equal(torch.rand(3), expected)
    built = len(sys.modules["usernets"].BUILT)
    assert models.batch_problem("usernets:mlp", (12,), 3) is None
    assert len(sys.modules["usernets"].BUILT) == built
    models.batch_problem("usernets:mlp", (13,), 3)
    assert len(sys.modules["usernets"].BUILT) == built + 1


def test_outputs_of_the_wrong_shape_are_an_error(nets: None) -> None:
    with pytest.raises(ConfigError, match=r"gives shape \(2, 4\) .*expected .*\(2, 3\)"):
        models.batch_problem("usernets:wrong_outputs", (6,), 3)


def test_builtins_are_answered_from_their_spec() -> None:
    assert models.batch_problem("nn2", (1, 28, 28), 10) is None
    assert models.batch_problem("vgg9", (1, 28, 28), 10) is None
    assert models.batch_problem("resnet18", (3, 32, 32), 10) == (
        "resnet18 has BatchNorm (running statistics are not vmapped); "
        "batched training takes nn2, nn3, lenet4 and vgg9"
    )


# -- entry points and register --------------------------------------------------------------


def fake_entry_points(*points: importlib.metadata.EntryPoint) -> Callable[..., list]:
    def entry_points(**selection: str) -> list:
        assert selection == {"group": "annealbench.models"}
        return list(points)

    return entry_points


def test_an_entry_point_is_a_model_under_its_name(
    write: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch, forget: list[str]
) -> None:
    write("usernets", NETS)
    point = importlib.metadata.EntryPoint("tiny", "usernets:mlp", "annealbench.models")
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points(point))
    forget.append("tiny")
    assert models.names()[-1] == "tiny"
    assert "usernets" not in sys.modules  # listed without loading
    spec = models.spec("tiny")
    assert (spec.name, spec.paper_name, spec.origin) == ("tiny", "tiny", "entry point")
    assert spec.description == "user model usernets:mlp"
    assert models.build("tiny", (9,), 2)(torch.zeros(1, 9)).shape == (1, 2)
    assert models.names().count("tiny") == 1


def test_a_broken_entry_point_says_which(
    monkeypatch: pytest.MonkeyPatch, forget: list[str]
) -> None:
    point = importlib.metadata.EntryPoint("gone", "no_such_pkg_a1:build", "annealbench.models")
    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points(point))
    forget.append("gone")
    with pytest.raises(ConfigError, match=r"entry point 'gone'.*no module named 'no_such_pkg_a1'"):
        models.spec("gone")


def test_register_and_unregister(nets: None, forget: list[str]) -> None:
    factory = importlib.import_module("usernets").mlp
    forget.append("mine")
    spec = models.register("mine", factory, deep=True, description="my tabular net")
    assert (spec.name, spec.paper_name, spec.deep, spec.origin) == (
        "mine",
        "mine",
        True,
        "registered",
    )
    assert models.spec("mine") == spec
    assert models.names()[-1] == "mine"
    assert models.build("mine", (4,), 2)(torch.zeros(1, 4)).shape == (1, 2)
    assert models.register("mine", factory, deep=True).deep  # the same factory again: fine
    with pytest.raises(ConfigError, match="already registered .*replace=True"):
        models.register("mine", lambda shape, classes: nn.Linear(shape[0], classes))
    models.register("mine", lambda shape, classes: nn.Linear(shape[0], classes), replace=True)
    assert isinstance(models.build("mine", (4,), 2), nn.Linear)
    models.unregister("mine")
    with pytest.raises(ConfigError, match="unknown model 'mine'"):
        models.spec("mine")


@pytest.mark.parametrize(
    ("name", "factory", "message"),
    [
        ("nn2", len, "built-in model"),
        ("a:b", len, "without ':'"),
        ("", len, "non-empty"),
        ("ok", 3, "int is not callable"),
    ],
)
def test_register_refuses(name: str, factory: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        models.register(name, factory)  # type: ignore[arg-type]


def module_level_factory(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Linear(input_shape[0], num_classes)


def test_reference_is_the_import_path_that_gives_the_factory_back(nets: None) -> None:
    assert models.reference(module_level_factory) == f"{__name__}:module_level_factory"
    usernets = importlib.import_module("usernets")
    assert models.reference(usernets.mlp) == "usernets:mlp"
    assert models.reference(usernets.Net.build) == "usernets:Net.build"
    assert models.reference(usernets.Net) == "usernets:Net"
    assert models.reference(models.build) == "annealbench.models:build"

    def local(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Linear(input_shape[0], num_classes)

    assert models.reference(local) is None
    assert models.reference(lambda shape, classes: None) is None
    assert models.reference(usernets.instance) is None
    path = models.reference(usernets.mlp)
    assert path is not None and isinstance(models.build(path, (3,), 2), nn.Module)


# -- every mistake, one clear error ---------------------------------------------------------


@pytest.mark.parametrize("ref", ["usernets:", ":mlp", "user nets:mlp", "a:b:c", "usernets:mlp()"])
def test_a_malformed_path_says_how_to_write_one(ref: str) -> None:
    with pytest.raises(ConfigError, match=r"not a valid import path: write package.module:factory"):
        models.build(ref, (3,), 2)


def test_an_unknown_bare_name_lists_the_models_and_hints_at_paths() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'mlpx'; valid models: nn2.*import path"):
        models.spec("mlpx")
    with pytest.raises(ConfigError, match=r"did you mean usernets:mlp\?"):
        models.spec("usernets.mlp")
    assert issubclass(ConfigError, ValueError)


def test_a_module_that_is_not_there() -> None:
    with pytest.raises(
        ConfigError,
        match=r"'no_such_nets_q7:build': cannot import module 'no_such_nets_q7'.*"
        r"folder that holds no_such_nets_q7\.py .*on PYTHONPATH, or run from it",
    ):
        models.build("no_such_nets_q7:build", (3,), 2)


def test_a_module_missing_from_its_package(write: Callable[[str, str], None]) -> None:
    write("userpkg.nets", NETS)
    assert isinstance(models.build("userpkg.nets:mlp", (3,), 2), nn.Module)
    with pytest.raises(ConfigError, match=r"no module 'userpkg\.other'.*spelling"):
        models.spec("userpkg.other:mlp")


def test_a_module_that_raises_on_import(write: Callable[[str, str], None]) -> None:
    write("broken_nets", "x = 1 / 0\n")
    with pytest.raises(
        ConfigError, match=r"importing module 'broken_nets' raised ZeroDivisionError: division"
    ):
        models.spec("broken_nets:build")
    write("needs_dep", "import not_installed_dep_z3\n")
    with pytest.raises(
        ConfigError, match=r"raised ModuleNotFoundError: No module named 'not_installed_dep_z3'"
    ):
        models.spec("needs_dep:build")


def test_a_missing_attribute_lists_the_modules_callables(nets: None) -> None:
    with pytest.raises(ConfigError, match=r"module 'usernets' has no attribute 'mpl'") as error:
        models.build("usernets:mpl", (3,), 2)
    listed = str(error.value).split("its public callables: ")[1].split(", ")
    assert {"mlp", "cnn", "Net", "raises"} <= set(listed)
    assert "Linear" not in listed  # imported, not the module's own
    with pytest.raises(ConfigError, match=r"object 'usernets:Net' has no attribute 'make'"):
        models.build("usernets:Net.make", (3,), 2)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("usernets:not_callable", r"'usernets:not_callable' is not callable: it is an int"),
        ("usernets:instance", r"is a model instance \(Linear\), not a factory"),
        (
            "usernets:raises",
            r"'usernets:raises': the factory raised ValueError: too few features when called "
            r"with input_shape=\(30,\), num_classes=3",
        ),
        ("usernets:returns_dict", r"returned a dict, not a torch.nn.Module"),
        (
            "usernets:no_parameters",
            r"returned a torch.nn.modules.activation.ReLU without parameters",
        ),
    ],
)
def test_a_bad_factory_says_what_is_wrong(nets: None, ref: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        models.build(ref, (30,), 3)


def test_user_models_need_one_or_three_dimensions(nets: None) -> None:
    with pytest.raises(ConfigError, match=r"input_shape must be \(features,\) or"):
        models.build("usernets:mlp", (5, 6), 3)
    with pytest.raises(ConfigError, match="num_classes must be"):
        models.build("usernets:mlp", (5,), 1)
