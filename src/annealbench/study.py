"""A study: a grid of runs (datasets x models x methods x trials), its presets, and its driver.

:func:`run_study` keeps every result in a :class:`~annealbench.store.Store` and can be
stopped at any moment: rerunning it skips finished runs and continues interrupted ones from
their last epoch checkpoint (``<store>.checkpoints/`` by default). Trials are seeds
``0..trials-1``, paired across methods (same initial weights and batch order per seed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import stat
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from annealbench.errors import ConfigError, StudyError
from annealbench.store import Claim, ClaimLost, Store, StoreError
from annealbench.training.config import RunConfig, RunOutcome
from annealbench.training.location import Location, is_uri, join

#: RunConfig fields a study fixes per run; every other field is a study-wide option.
GRID_FIELDS = ("dataset", "model", "method", "seed")
#: The paper runs every (dataset, model, method) cell 10 times: seeds 0..9.
DEFAULT_TRIALS = 10
#: How often the driver renews its claims so runners on other hosts leave them alone.
HEARTBEAT_S = 60.0
#: Sustained rate assumed to turn FLOPs into GPU-hours in :func:`estimate` (a rough guide).
ASSUMED_GPU_FLOPS = 20e12
#: ``--batched`` choices: group runs where it wins (auto), wherever possible (on), never (off).
BATCHED_MODES = ("auto", "on", "off")
#: Most runs one group trains together, by device type. On the CPU 12 (one seed's row of the
#: paper's 12 methods), the largest group measured (1.5-1.85x, benchmarks/README.md); on a
#: GPU one row of the paper's grid (12 methods x 10 trials).
MAX_GROUP = {"cpu": 12}
MAX_GROUP_ACCELERATOR = 120


@dataclass(frozen=True)
class Study:
    """A grid of runs and the options every run shares (``options`` are RunConfig fields)."""

    name: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    methods: tuple[str, ...]
    trials: int
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: The study file it was read from: {"path": ..., "text": ...} (kept in its settings).
    source: Mapping[str, str] | None = None
    #: Each method's own peak rate: its curve times each scale, searched on the validation
    #: split with ``tune_trials`` tuning seeds before the final trials (annealbench.tuning).
    tune_scales: tuple[float, ...] = ()
    tune_trials: int = 1
    #: Training budgets in percent of ``epochs`` (100 always among them): every final trial
    #: also runs at each shorter budget (:func:`budget_configs`; a tuning search runs at 100).
    budgets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # File paths are made absolute here, so workers in other folders find the data.
        from annealbench import data

        if isinstance(self.datasets, (tuple, list)) and all(
            isinstance(d, str) for d in self.datasets
        ):
            object.__setattr__(self, "datasets", tuple(data.canonical(d) for d in self.datasets))

    @property
    def n_runs(self) -> int:
        """Every run: the final trials, and the tuning search's runs of a tuned study."""
        cells = len(self.datasets) * len(self.models) * len(self.methods)
        budgets = max(len(self.budget_epochs()), 1)
        return cells * (self.trials * budgets + len(self.tune_scales) * self.tune_trials)

    def budget_epochs(self) -> list[tuple[int, int | None]]:
        """``(epochs, full_epochs)`` of each budget, the full one first (empty without
        budgets). StudyError for a budget that is not a whole number of epochs."""
        from annealbench.training.config import DEFAULT_EPOCHS

        if not self.budgets:
            return []
        epochs = self.options.get("epochs", DEFAULT_EPOCHS)
        out: list[tuple[int, int | None]] = [(epochs, None)]
        for budget in sorted(set(self.budgets) - {100}, reverse=True):
            if isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget < 100:
                raise StudyError(
                    f"budgets must be whole percentages from 1 to 100, e.g. 25,50,100; got "
                    f"{budget!r}"
                )
            if not isinstance(epochs, int) or (epochs * budget) % 100:
                raise StudyError(
                    f"budget {budget}% of {epochs} epochs is {epochs * budget / 100:g} epochs: "
                    "choose budgets that are whole epochs (e.g. 25,50,100 with --epochs 8, 20 "
                    "or 100)"
                )
            out.append((epochs * budget // 100, epochs))
        return out

    def validate(self) -> None:
        """Raise StudyError unless every run of the study can train: checked before anything
        is stored, so a study that cannot run never leaves a row that blocks its name.

        Covers the name, the grid (names, duplicates, size), every run option (types,
        ranges, ``subset`` against each dataset's training set, each model against each
        dataset's image size) and every method (its optimizer built on a probe tensor, its
        schedule built).
        """
        from annealbench import tuning

        _check_name(self.name)
        _check_grid(self)
        tuning.check(self)
        _check_options(self)
        _check_methods(self)
        _check_budgets(self)
        _check_fit(self)

    def template(self) -> Any:
        """The RunConfig of the grid's first run: every option with defaults filled in."""
        return RunConfig(
            dataset=self.datasets[0],
            model=self.models[0],
            method=self.methods[0],
            seed=0,
            **self.options,
        )

    def configs(self) -> list[Any]:
        """Every run, seed-major so a partial study already holds whole paired trials; for a
        tuned study, the search's runs (its final runs follow from the search's results)."""
        if self.tune_scales:
            from annealbench import tuning

            return tuning.search_configs(self)
        return budget_configs(self, [
            RunConfig(dataset=d, model=m, method=meth, seed=seed, **self.options)
            for seed in range(self.trials)
            for d in self.datasets
            for m in self.models
            for meth in self.methods
        ])  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """What the store keeps to recognise a rerun: the grid and every run option."""
        # The device is where a run trains, not what it is (the run key leaves it out of the
        # run key too), so a study may be resumed on other hardware.
        # A user method's definition belongs to its method, not to the grid's first run:
        # every one is recorded, so editing any of them is a conflict, and order is not.
        # The same for a named user dataset's definition and a user dataset's facts (its
        # fingerprint: data edited between a run and its resume is a conflict).
        skip = {*GRID_FIELDS, "custom_method", "custom_dataset"}
        run = {k: v for k, v in self.template().identity().items() if k not in skip}
        settings: dict[str, Any] = {
            "datasets": list(self.datasets),
            "models": list(self.models),
            "methods": list(self.methods),
            "trials": self.trials,
            "run": run,
        }
        if self.tune_scales:
            settings["tune"] = {"scales": list(self.tune_scales), "trials": self.tune_trials}
        if self.budgets:
            settings["budgets"] = sorted({*self.budgets, 100})
        configs = self.configs()
        first_seed = [c for c in configs if c.seed == configs[0].seed]
        for key, of, field_name in (
            ("custom_methods", "method", "custom_method"),
            ("custom_datasets", "dataset", "custom_dataset"),
        ):
            custom = {
                getattr(c, of): getattr(c, field_name)
                for c in first_seed
                if getattr(c, field_name) is not None
            }
            if custom:
                settings[key] = custom
        facts = self.data_facts()
        if facts:
            settings["data"] = facts
        if self.source is not None:
            settings["source"] = dict(self.source)
        return settings

    def data_facts(self) -> dict[str, Any]:
        """What the store keeps about each user dataset: sizes, classes, normalization
        statistics (computed on its training split) and a fingerprint of its arrays."""

        facts = {}
        for dataset in self.datasets:
            template = replace(self.template(), dataset=dataset, custom_dataset=None)
            fact = template.dataset_spec().facts()
            if fact.get("fingerprint") is not None:
                facts[dataset] = fact
        return facts


#: SQLite stores integers in 64 bits: a larger epoch count or seed cannot be stored.
MAX_INTEGER = 2**63 - 1
#: The most runs one study may hold (the paper's whole grid is 2,760).
MAX_RUNS = 1_000_000


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name.strip():
        raise StudyError(
            f"the study name must be a non-empty string, got {name!r}; give --study NAME "
            "(or leave --study out for the preset's name, or 'default')"
        )


def _check_grid(study: Study) -> None:
    """The grid: known, distinct names, at least one run and at most :data:`MAX_RUNS`."""
    from annealbench import data, methods, models

    trials = study.trials
    if isinstance(trials, bool) or not isinstance(trials, int):
        raise StudyError(f"--trials must be a whole number, got {trials!r}")
    if trials < 0:
        raise StudyError(f"--trials must not be negative, got {trials}; give at least 1")
    empty = [
        f"--{flag}"
        for flag, values in (
            ("datasets", study.datasets),
            ("models", study.models),
            ("methods", study.methods),
        )
        if not values
    ]
    if empty or trials == 0:
        what = ", ".join(empty + (["--trials 0"] if trials == 0 else []))
        raise StudyError(f"the grid has zero runs ({what} empty); give at least one of each")
    for kind, given, known in (
        ("dataset", study.datasets, data.spec),
        ("model", study.models, models.spec),
        ("method", study.methods, methods.get),
    ):
        for name in given:
            try:  # a name, or a user dataset's or model's reference (read, or imported)
                known(name)
            except ValueError as exc:  # ConfigError, MethodError
                raise StudyError(str(exc)) from None
        duplicated = sorted({name for name in given if given.count(name) > 1})
        if duplicated:
            raise StudyError(f"{kind} {', '.join(duplicated)} listed twice")
    if study.n_runs > MAX_RUNS:
        raise StudyError(
            f"the grid has {study.n_runs:,} runs; one study holds at most {MAX_RUNS:,}: "
            "give fewer --trials or split the grid into several studies"
        )


def _check_options(study: Study) -> None:
    """Every run option: known, of its type, in its range, storable."""
    from annealbench import data

    known = set(RunConfig.__dataclass_fields__) - set(GRID_FIELDS)
    unknown_options = sorted(set(study.options) - known)
    if unknown_options:
        raise StudyError(
            f"unknown run options {unknown_options}; valid: {', '.join(sorted(known))}"
        )
    try:
        template = study.template()
        template.validate()
    except (TypeError, ValueError) as exc:
        raise StudyError(f"bad run options: {exc}") from exc
    for name in ("epochs", "batch_size", "subset"):
        value = getattr(template, name)
        if value is not None and value > MAX_INTEGER:
            raise StudyError(
                f"--{name.replace('_', '-')} {value} is too large: the store keeps whole "
                f"numbers up to {MAX_INTEGER}; give a smaller number"
            )
    for name in ("channels_last", "bf16", "compile"):
        if not isinstance(getattr(template, name), bool):
            raise StudyError(f"{name} must be true or false, got {getattr(template, name)!r}")
    for dataset in study.datasets:
        size = data.spec(dataset).train_size
        if template.subset is not None and template.subset > size:
            raise StudyError(
                f"--subset {template.subset} is more than the {size:,} training images of "
                f"{dataset}; give at most {size}, or leave --subset out for all of them"
            )
        try:
            data.validation_size(template.validation, template.subset or size)
        except ConfigError as exc:
            raise StudyError(f"--validation for {dataset}: {exc}") from None


def _check_methods(study: Study) -> None:
    """Every method can train: its optimizer is built on a probe tensor, its schedule
    built (a user method's definition is the one its runs carry)."""
    from annealbench.errors import MethodError

    template = study.template()
    for method in study.methods:
        try:
            replace(template, method=method, custom_method=None).method_spec().validate()
        except (MethodError, ConfigError) as exc:
            raise StudyError(f"method {method!r} cannot train: {exc}") from None


def _check_fit(study: Study) -> None:
    """Every model takes every dataset's inputs: the CIFAR-form models need 32x32 images,
    the convolutional ones images at all; a user model is built and run on a probe batch
    (:func:`annealbench.models.batch_problem`), so a misfit is found before anything runs."""
    from annealbench import data, methods, models

    for dataset in study.datasets:
        spec = data.spec(dataset)
        shape = tuple(spec.input_shape)
        for model in study.models:
            model_spec = models.spec(model)
            size = model_spec.input_size
            need = None
            if size is not None and shape[1:] != tuple(size):
                need = f"it is the CIFAR form and needs C×{size[0]}×{size[1]} images (svhn, "
                need += "cifar10, cifar100)"
            elif model_spec.origin != "builtin":
                try:
                    models.batch_problem(model, shape, spec.num_classes)
                except ValueError as exc:
                    need = str(exc)
            elif len(shape) != 3 and model not in ("nn2", "nn3"):
                need = "it is convolutional and needs C×H×W images"
            if (
                need is None
                and any(methods.get(m).schedule_free for m in study.methods)
                and _has_batchnorm(model, shape, spec.num_classes)
            ):
                need = (
                    "it has BatchNorm, and schedule-free methods would need its statistics "
                    "recomputed at the averaged weights (not done yet): drop sf-sgd/sf-adamw "
                    "for it"
                )
            if need is not None:
                raise StudyError(
                    f"model {model} does not fit {dataset} ({'×'.join(map(str, shape))} "
                    f"inputs, {spec.num_classes} classes): {need}; drop one of them from "
                    "the grid"
                )


def _has_batchnorm(model: str, shape: tuple[int, ...], classes: int) -> bool:
    """Whether a model holds BatchNorm: from its spec, or (a user model) built to look."""
    import torch

    from annealbench import models

    known = models.spec(model).has_batchnorm
    if known is not None:
        return known
    with torch.random.fork_rng(devices=[]):
        net = models.build(model, shape, classes)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _check_portable(study: Study, executor: str, workers: int | str) -> None:
    """A model registered in this process (not importable) trains only in this process."""
    from annealbench import executors, models

    local = [m for m in study.models if models.spec(m).origin == "registered"]
    if not local or (executor == "local" and workers == 1):
        return
    auto = executor == "local" and workers == "auto"  # measured only when it decides
    if auto and executors.auto_workers(study.template().device) == 1:
        return
    raise StudyError(
        f"model {', '.join(local)} is registered in this process only, so worker "
        "processes cannot build it; define its factory in a module (import path "
        "package.module:factory) or run with workers=1"
    )


# -- presets -----------------------------------------------------------------------------


def _preset_files() -> dict[str, Any]:
    folder = resources.files("annealbench") / "presets"
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir() if p.name.endswith(".toml")}


#: Presets listed first, in the paper's order of datasets; any other file follows by name.
_PRESET_ORDER = ("quick", "modern-quick", "paper-mnist", "paper-fashion-mnist", "paper-svhn",
                 "paper-cifar10", "paper-cifar100", "modern-fashion-mnist")  # fmt: skip


def preset_names() -> list[str]:
    """Names of the presets shipped in ``annealbench/presets/*.toml``, quick first."""
    order = {name: i for i, name in enumerate(_PRESET_ORDER)}
    return sorted(_preset_files(), key=lambda n: (order.get(n, len(order)), n))


def preset_table(name: str) -> dict[str, Any]:
    """The raw TOML table of preset ``name``."""
    files = _preset_files()
    if name not in files:
        raise StudyError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    return tomllib.loads(files[name].read_text(encoding="utf-8"))


def load_preset(name: str, **overrides: Any) -> Study:
    """The study of preset ``name``; ``overrides`` (not None) replace its grid or options."""
    from annealbench import study_file

    files = _preset_files()
    if name not in files:
        raise StudyError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")
    text = files[name].read_text(encoding="utf-8")
    return study_file.parse(text, name, None, where=f"preset {name}", **overrides)


def paper_methods() -> tuple[str, ...]:
    """The paper's 12 methods in Table 2's column order."""
    from annealbench import methods

    return methods.PAPER_METHODS


def estimate(name: str) -> dict[str, Any]:
    """Size and estimated compute of preset ``name``.

    FLOPs are 3x the forward FLOPs per image (forward + backward) over the training set plus
    one forward pass over the test set, every epoch; the forward MFLOPs per model are in the
    preset's ``[cost]`` table (counted by :func:`forward_mflops`, checked by the tests).
    GPU-hours assume :data:`ASSUMED_GPU_FLOPS` sustained: a rough guide, not a measurement.
    """
    from annealbench import data
    from annealbench.training.config import DEFAULT_EPOCHS

    table = preset_table(name)
    study = load_preset(name)
    epochs = int(study.options.get("epochs", DEFAULT_EPOCHS))
    forward = table.get("cost", {}).get("forward_mflops", {})
    flops = 0.0
    for dataset in study.datasets:
        spec = data.spec(dataset)
        train_n = min(spec.train_size, study.options.get("subset") or spec.train_size)
        for model in study.models:
            per_run = epochs * forward.get(model, math.nan) * 1e6 * (3 * train_n + spec.test_size)
            budgets = sum(e for e, _ in study.budget_epochs()) / epochs or 1.0  # + shorter
            runs = study.trials * budgets + len(study.tune_scales) * study.tune_trials
            flops += per_run * len(study.methods) * runs
    return {
        "name": name,
        "description": study.description,
        "runs": study.n_runs,
        "epochs": epochs,
        "run_epochs": study.n_runs * epochs,
        "pflop": flops / 1e15,
        "gpu_hours": flops / ASSUMED_GPU_FLOPS / 3600,
        "measured": table.get("measured", ""),
    }


def forward_mflops(model: str, dataset: str) -> float:
    """Forward-pass MFLOPs per sample of ``model`` on ``dataset``'s input shape (counted by
    :func:`annealbench.models.count_flops`)."""
    from annealbench import data, models

    spec = data.spec(dataset)
    return models.count_flops(model, spec.input_shape, spec.num_classes).forward / 1e6


# -- batching ----------------------------------------------------------------------------


def max_group(device: str) -> int:
    """The most runs one group trains together on ``device`` (auto, cpu, cuda:0, ...)."""
    from annealbench.training.parts import resolve_device

    kind = resolve_device(device).type
    return MAX_GROUP.get(kind, MAX_GROUP_ACCELERATOR)


def group_size(candidates: Sequence[Any], batched: str, device: str) -> int:
    """How many of ``candidates`` (pending RunConfigs of one dataset and model, in run order)
    to train as one group on ``device``; 1 means one run alone.

    ``auto``: the largest group :func:`annealbench.batched.should_batch` picks (on the CPU nn2
    with 4+ runs; never BatchNorm models), else 1. ``on``: as many as allowed whenever
    :func:`~annealbench.batched.check_batchable` accepts them (:func:`check_batched` refuses
    a study it does not accept before anything runs). ``off``: 1.
    """
    from annealbench.training.batched import check_batchable, should_batch

    # ``batched`` was checked once, before the study started (check_batched).
    group = list(candidates[: max_group(device)])
    if batched == "off" or len(group) < 2:
        return 1
    group = [replace(c, device=device) for c in group]
    if batched == "auto":
        return len(group) if should_batch(group, device) else 1
    try:
        check_batchable(group)
    except ConfigError:
        return 1
    return len(group)


def check_batched(study: Study, batched: str, executor: str = "local") -> None:
    """Refuse ``--batched`` settings the study cannot honour, before anything is stored:
    an unknown mode, or ``on`` with runs that cannot share a pass (BatchNorm models, an
    unsupported optimizer) or with the Ray executor (one run per task)."""
    from annealbench.training.batched import check_batchable

    if batched not in BATCHED_MODES:
        raise StudyError(f"unknown --batched {batched!r}; valid: {', '.join(BATCHED_MODES)}")
    if batched != "on":
        return
    if executor != "local":
        raise StudyError(
            f"--batched on applies to the local executor; --executor {executor} trains one run "
            "per task (use --batched auto or off)"
        )
    configs = study.configs()
    for dataset in study.datasets:
        for model in study.models:
            # Methods without a batched update (schedule-free) train alone in any mode.
            row = [
                c for c in configs if c.dataset == dataset and c.model == model and _groupable(c)
            ]
            if not row:
                continue
            try:
                check_batchable(row)
            except ConfigError as exc:
                raise StudyError(
                    f"--batched on: {dataset}/{model}: {exc}. Use --batched auto (groups only "
                    "where they can and do win) or off."
                ) from None


# -- running -----------------------------------------------------------------------------


def default_checkpoint_dir(store_path: str | Path) -> Path:
    return Path(f"{store_path}.checkpoints")


def preflight(
    study: Study,
    store_path: str | Path,
    *,
    executor: str = "local",
    workers: int | str = 1,
    threads: int | None = None,
    data_root: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpu_fraction: float | None = None,
    max_retries: int = 2,
    batched: str = "auto",
    log: Sequence[str] = (),
) -> None:
    """Everything :func:`run_study` checks before it opens the store: the study
    (:meth:`Study.validate`), ``batched``, the executor's options, the data root, the
    checkpoint folder and (local executor) the device. Writes nothing; raises an
    AnnealbenchError naming the option, the bad value and the fix."""
    from annealbench import data, executors
    from annealbench.training.parts import resolve_device

    study.validate()
    _check_portable(study, executor, workers)
    check_batched(study, batched, executor)
    if log:
        from annealbench import tracking

        tracking.check(log)  # a bad --log spec: an error before anything is stored
    executors.check_options(
        executor, workers=workers, threads=threads, address=address, cpus_per_run=cpus_per_run,
        gpu_fraction=gpu_fraction, max_retries=max_retries,
    )  # fmt: skip
    root = Path(data_root).expanduser() if data_root is not None else data.default_root()
    if root.exists() and not root.is_dir():
        raise StudyError(
            f"--data-root {root} is not a folder; give the folder that holds (or will hold) "
            "the datasets, or leave it out for the default"
        )
    from annealbench.store import schema

    # The store's own folder first: the checkpoint folder defaults to one beside it.
    schema.check_folder_writable(Path(store_path).expanduser().parent)
    check_folder(checkpoint_dir or default_checkpoint_dir(store_path), "--checkpoint-dir")
    if executor == "local":  # a Ray cluster's devices are its nodes', not this machine's
        resolve_device(study.template().device)


def check_folder(folder: str | Path, option: str) -> None:
    """Raise StudyError unless ``folder`` is, or can be created as, a writable folder
    (an object-store URI such as ``s3://bucket/prefix`` is left to its filesystem).
    A folder with every write bit removed counts as read-only even for root, as for stores."""
    if is_uri(folder):
        return
    path = Path(folder).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise StudyError(f"{option} {path} is not a folder; give a folder (created if missing)")
    if not existing.is_dir():
        raise StudyError(
            f"{option} {path} cannot be created: {existing} is not a folder; give another path"
        )
    no_write_bits = not existing.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    if no_write_bits or not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise StudyError(f"{option} {path} {what}; give a folder you can write to")


def checkpoint_path(folder: str | Path, claim: Claim) -> Location:
    """One file per run: the run id makes it unique in the store, the key names the config."""
    return join(folder, f"run{claim.run_id:06d}-{claim.run_key}.pt")


@dataclass
class StudyOutcome:
    """What one :func:`run_study` call did, and where the study stands."""

    study: str
    total: int
    counts: dict[str, int]
    interrupted: bool = False
    failures: list[str] = field(default_factory=list)
    #: An error every run would hit (missing data, no such device): the study stopped on it.
    fatal: str | None = None

    @property
    def remaining(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("running", 0)


class _Driver:
    """The executors' sink: writes what workers report, keeps the bars and heartbeats."""

    def __init__(self, store: Store, study_id: int, total: int, finished: int, ckpt: str | Path,
                 max_retries: int, progress: bool, device: str,
                 batched: str = "off", loggers: Sequence[Any] = (),
                 branches: Mapping[int, list[Branch]] | None = None) -> None:  # fmt: skip
        self.store = store
        # Shorter WSD budgets by their trunk's run id: held back from claims, they get a
        # checkpoint when the trunk passes their branch epoch (branched: run id -> epochs).
        self.branches = dict(branches or {})
        self.hold = {b.run_id for bs in self.branches.values() for b in bs}
        self.branched: dict[int, int] = {}
        # Mirrors of the runs (annealbench.tracking), told of every epoch and end after
        # the store has it; one that fails is dropped with a warning, the runs go on.
        self.loggers = list(loggers)
        self.device = device
        self.batched = batched
        self.study_id = study_id
        self.ckpt = ckpt
        self.max_retries = max_retries
        self.in_flight: dict[int, Claim] = {}
        self.told: set[tuple[str, str]] = set()  # (dataset, model) said to train alone
        self.epochs_seen: dict[int, int] = {}
        self.failures: list[str] = []
        self.fatal: str | None = None
        self.last_beat = time.monotonic()
        self.bar = _study_bar(total, finished, progress)

    def next_claim(self) -> Claim | None:
        """The next run to train alone, or None when none is left."""
        claims = self._claim(1)
        return claims[0] if claims else None

    def next_claims(self) -> list[Claim]:
        """The next unit of work: one run, or a group of one dataset and model to train in
        one batched pass (``--batched``); empty when none is left."""
        if self.batched == "off":
            return self._claim(1)
        return self._claim(max_group(self.device))

    def _claim(self, limit: int) -> list[Claim]:
        """Claim up to ``limit`` runs of one dataset and model; the group's size is decided
        (optimizers may be built) before the store is locked to claim them."""
        if self.fatal is not None:
            return []
        claims: list[Claim] = []
        while not claims and (
            pending := self.store.pending_group(self.study_id, limit, exclude=self.hold)
        ):
            try:
                runs = [RunConfig.from_dict(p.config) for p in pending]
            except (TypeError, ValueError):  # a bad stored config: alone, it fails as a run
                runs = []
            # Runs whose optimizer has no batched update (schedule-free) train alone; the
            # others of the candidates can still form a group.
            chosen = [i for i, run in enumerate(runs) if _groupable(run)]
            if runs and chosen and chosen[0] != 0:
                chosen = []
            group = [runs[i] for i in chosen]
            size = group_size(group, self.batched, self.device) if len(group) > 1 else 1
            if size == 1 and len(group) > 1:
                self._say_why_alone(group[0])
            ids = [pending[i].run_id for i in chosen[:size]] if size > 1 else [pending[0].run_id]
            # Runs another process claimed meanwhile are left out; none left: ask again.
            claims = self.store.claim_runs(self.study_id, ids)
        # Train where this command says, whatever device the study was started with.
        claims = [replace(c, config={**c.config, "device": self.device}) for c in claims]
        for claim in claims:
            self.in_flight[claim.run_id] = claim
            self.epochs_seen[claim.run_id] = 0
        if claims:
            self._postfix()
        return claims

    def checkpoint(self, claim: Claim) -> Location:
        return checkpoint_path(self.ckpt, claim)

    def _say_why_alone(self, run: RunConfig) -> None:
        """One line, once per model and dataset, when a model cannot train in a group."""
        from annealbench.training.batched import model_problem

        if self.batched == "off" or (run.dataset, run.model) in self.told:
            return
        self.told.add((run.dataset, run.model))
        with contextlib.suppress(ValueError):  # a bad model fails as its runs, with its error
            problem = model_problem(run)
            if problem is not None:
                self.write(f"{run.model} trains one run at a time: {problem}")

    def epoch(self, claim: Claim, record: Mapping[str, Any]) -> None:
        try:
            self.store.record_epoch(claim, record)
        except ClaimLost as exc:
            self.write(f"run {_describe(claim)}: {exc}")
            return
        self.epochs_seen[claim.run_id] = int(record["epoch"])
        for branch in self.branches.get(claim.run_id, ()):
            if branch.epoch == int(record["epoch"]):
                self._branch(claim, branch)
        self._tell("epoch", claim, record)
        self._postfix()
        self.tick()

    def _branch(self, trunk: Claim, branch: Branch) -> None:
        """Give ``branch`` the trunk's checkpoint of this epoch as its own: the same state
        its own training would reach, bit for bit (same seed, batch order and rates)."""
        from annealbench.training import checkpoint as ckpt_mod

        target = checkpoint_path(self.ckpt, branch)  # type: ignore[arg-type]
        if target.exists():  # it trained (or branched) already
            return
        try:
            state = ckpt_mod.load_checkpoint(self.checkpoint(trunk), branch.trunk)
        except Exception:  # no checkpoint, or the trunk moved on: the branch trains it all
            return
        if state.get("epoch") != branch.epoch or state.get("status") != "running":
            return
        state["config"] = branch.config.identity()
        state["records"] = [dataclasses.asdict(r) for r in state["records"]]
        ckpt_mod.save_atomic(state, target)
        self.branched[branch.run_id] = branch.epoch

    def _tell(self, event: str, claim: Claim, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, event)(claim, *args)
            except Exception as exc:  # a tracking backend's failure never stops a study
                self.loggers.remove(logger)
                self.write(
                    f"logging to {logger} stopped: {type(exc).__name__}: {exc}; the study "
                    "goes on, and rerunning it with the same --log fills in what is missing"
                )

    def finished(self, claim: Claim, outcome: RunOutcome) -> None:
        """Store a run's final status, its full epoch list and environment; drop its checkpoint."""
        status = outcome.status
        try:
            self.store.finish_run(
                claim, status, error=outcome.error, epochs=outcome.epochs,
                environment=outcome.environment,
            )  # fmt: skip
        except ClaimLost as exc:  # another runner holds it now and will store it
            self.write(f"run {_describe(claim)}: {exc}")
            self._forget(claim)
            return
        self._tell("finished", claim, status, outcome.epochs)
        if status in ("done", "diverged"):
            # With any temporary file of a worker killed while saving it.
            self.checkpoint(claim).remove()
        else:
            self.failures.append(f"{_describe(claim)}: {outcome.error}")
            self.write(f"run {_describe(claim)} failed: {outcome.error}")
            if outcome.study_wide:
                self.fatal = str(outcome.error)
        self._forget(claim)
        if self.bar is not None:
            self.bar.update(1)

    def lost(self, claim: Claim, reason: str) -> None:
        """A worker died under the run: retry it (from its checkpoint) or give up on it.

        Only these deaths count against ``max_retries`` (the store's crash count): runs
        released by Ctrl-C, a killed driver or a full disk are claimed again for free.
        """
        try:
            crashes = self.store.record_crash(claim)
        except ClaimLost as exc:  # another runner holds it now
            self.write(f"run {_describe(claim)}: {exc}")
            self._forget(claim)
            return
        if crashes <= self.max_retries:
            self.write(
                f"run {_describe(claim)}: {reason}; retrying from its checkpoint "
                f"(worker crash {crashes}, --max-retries {self.max_retries})"
            )
            self.store.release_run(claim)
            self._forget(claim)
        else:
            self.finished(
                claim, RunOutcome("failed", f"{reason} ({crashes} crashes of its worker)")
            )

    def release_all(self) -> list[Claim]:
        """Put every run in flight back to pending (Ctrl-C); returns them."""
        released = list(self.in_flight.values())
        for claim in released:
            with contextlib.suppress(StoreError):
                self.store.release_run(claim)
        self.in_flight.clear()
        return released

    def tick(self) -> None:
        if time.monotonic() - self.last_beat > HEARTBEAT_S and self.in_flight:
            self.store.heartbeat(self.in_flight.values())
            self.last_beat = time.monotonic()

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        for logger in self.loggers:
            with contextlib.suppress(Exception):
                logger.close()
        if self.bar is not None:
            self.bar.close()

    def _forget(self, claim: Claim) -> None:
        self.in_flight.pop(claim.run_id, None)
        self.epochs_seen.pop(claim.run_id, None)
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is None:
            return
        running = [
            f"{_describe(c)} e{self.epochs_seen.get(c.run_id, 0)}/{c.config.get('epochs')}"
            for c in self.in_flight.values()
        ]
        self.bar.set_postfix_str("; ".join(running[:3]) + (" ..." if len(running) > 3 else ""))


def _groupable(run: RunConfig) -> bool:
    """Whether the run may join a group: schedule-free optimizers have no batched update
    and always train alone; any other method is judged by the group's checks."""
    try:
        return not run.method_spec().schedule_free
    except (ConfigError, ValueError):
        return False


def _describe(claim: Claim) -> str:
    c = claim.config
    return f"{c['dataset']}/{c['model']}/{c['method']}/seed{c['seed']}"


def _study_bar(total: int, finished: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=finished, desc="study", unit="run", position=0,
                dynamic_ncols=True, smoothing=0.1)  # fmt: skip


def grow_study(store: Store, study: Study) -> tuple[int, Study]:
    """Create ``study`` in ``store``, or grow the stored study of its name; return its id and
    the study as the store holds it now (the union of both grids) with its runs added.

    A rerun naming more trials, methods, datasets or models with the same run options adds
    the runs the union grid lacks (every dataset x model x method x trial, so new seeds stay
    paired across every method) and trains only those; finished runs stay. A rerun naming
    fewer adds and removes nothing: the study keeps its grid and its unfinished runs all
    train. Other run options, or an edited user method the study holds, are refused with
    the list of differences (:meth:`Store.ensure_study`, one write transaction, so two
    processes growing one study at once keep both additions). Stored user methods keep
    their stored definitions, loaded in this process or not.
    """
    settings = study.settings()
    if study.name in store.study_names():
        stored = store.study_settings(study.name)
        _check_data_unchanged(study.name, stored, settings)
        _define_stored_datasets(study.name, stored)
    study_id = store.ensure_study(
        study.name, settings, check=lambda merged: _check_union(study, merged)
    )
    stored = store.study_settings(study.name)
    added = store.add_runs(study_id, _union_configs(study, stored))
    # This command's methods first: the template (the device) needs a method it can build.
    methods = (*study.methods, *(m for m in stored["methods"] if m not in study.methods))
    grown = replace(study, datasets=tuple(stored["datasets"]), models=tuple(stored["models"]),
                    methods=methods, trials=int(stored["trials"]))  # fmt: skip
    extra = grown.n_runs - study.n_runs
    searched = len(grown.configs()) if grown.tune_scales else grown.n_runs  # finals come later
    if added < searched and (added or extra):  # an existing study grew, or holds more
        more = (
            f"; {extra} more than this command names, kept: every unfinished run of the "
            "study trains"
            if extra
            else ""
        )
        print(f"study {study.name!r} now holds {grown.n_runs} runs ({added} added){more}")
    return study_id, grown


def _check_budgets(study: Study) -> None:
    """Each budget a whole number of epochs, and every shorter WSD budget's cooldown after
    the full run's warmup (checked at the study's real number of updates per epoch)."""
    from annealbench.training.parts import RatePlan, updates_per_epoch

    budgets = study.budget_epochs()
    for dataset in study.datasets if budgets else ():
        template = replace(study.template(), dataset=dataset, custom_dataset=None)
        steps = updates_per_epoch(template)
        for method in study.methods:
            for epochs, full in budgets[1:]:
                config = replace(template, method=method, epochs=epochs, full_epochs=full)
                try:
                    RatePlan.for_run(config, steps)
                except ConfigError as exc:
                    raise StudyError(f"budget {100 * epochs // full}%: {exc}") from None


def budget_configs(study: Study, configs: Sequence[RunConfig]) -> list[RunConfig]:
    """``configs`` (full-budget runs) followed by their copies at each shorter budget of the
    study, budget by budget: every full run (the trunk a shorter WSD budget branches from)
    comes before the shorter runs."""
    out = list(configs)
    for epochs, full in study.budget_epochs()[1:]:
        out += [replace(c, epochs=epochs, full_epochs=full) for c in configs]
    return out


def _define_stored_datasets(name: str, stored: Mapping[str, Any]) -> None:
    """The named user datasets a stored study holds, defined in this process from their
    stored definitions (as stored user methods are), so the grown grid can be checked."""
    from annealbench import data

    for dataset, definition in (stored.get("custom_datasets") or {}).items():
        if dataset not in data.REGISTRY:
            try:
                data.from_config(definition)
            except (ConfigError, ValueError) as exc:
                raise StudyError(
                    f"study {name!r} holds dataset {dataset!r}, which this process cannot "
                    f"load from its stored definition: {exc}"
                ) from None


def _check_data_unchanged(name: str, stored: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse to resume a study on user data other than the data it was run on."""
    old, new = stored.get("data") or {}, given.get("data") or {}
    for dataset in sorted(set(old) & set(new)):
        was, now = old[dataset].get("fingerprint"), new[dataset].get("fingerprint")
        if was != now:
            raise StudyError(
                f"the data of {dataset} changed since study {name!r} stored its results "
                f"(fingerprint {str(was)[:12]}... then, {str(now)[:12]}... now); restore the "
                "data it was run on to resume, or pass a new --study name"
            )


def _check_union(study: Study, merged: Mapping[str, Any]) -> None:
    """Refuse a grown grid that cannot train: too many runs, or a model that does not fit a
    dataset (a new dataset meets the stored models, a new model the stored datasets)."""
    grown = replace(study, datasets=tuple(merged["datasets"]), models=tuple(merged["models"]),
                    methods=tuple(merged["methods"]), trials=int(merged["trials"]))  # fmt: skip
    if grown.n_runs > MAX_RUNS:
        raise StudyError(
            f"grown, study {study.name!r} would hold {grown.n_runs:,} runs; one study holds at "
            f"most {MAX_RUNS:,}: give a new --study name"
        )
    try:
        _check_fit(grown)
    except StudyError as exc:
        raise StudyError(f"cannot grow study {study.name!r} (it holds more): {exc}") from None


def _union_configs(study: Study, stored: Mapping[str, Any]) -> list[RunConfig]:
    """Every run of the stored grid, seed-major, with ``study``'s run options; a user method
    carries its stored definition."""
    custom = stored.get("custom_methods") or {}
    datasets = stored.get("custom_datasets") or {}
    if study.tune_scales:  # the stored grid's search; its final runs follow its results
        from annealbench import tuning

        grown = replace(study, datasets=tuple(stored["datasets"]),
                        models=tuple(stored["models"]), methods=tuple(stored["methods"]),
                        trials=int(stored["trials"]))  # fmt: skip
        return tuning.search_configs(grown, stored)
    try:
        return budget_configs(study, [
            RunConfig(
                d,
                m,
                meth,
                seed,
                custom_method=custom.get(meth),
                custom_dataset=datasets.get(d),
                **study.options,
            )
            for seed in range(int(stored["trials"]))
            for d in stored["datasets"]
            for m in stored["models"]
            for meth in stored["methods"]
        ])  # fmt: skip
    except ConfigError as exc:
        raise StudyError(
            f"study {study.name!r} holds a method this process cannot build: {exc}; load its "
            "definition with --methods-file"
        ) from None


def _counts(store: Store, study: str) -> dict[str, int]:
    runs = store.runs_frame(study, tuning=True)
    return {k: int(v) for k, v in runs["status"].value_counts().items()}


def run_study(
    study: Study,
    store_path: str | Path,
    *,
    executor: str = "local",
    workers: int | str = 1,
    threads: int | None = None,
    data_root: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpu_fraction: float | None = None,
    max_retries: int = 2,
    progress: bool = True,
    retry_failed: bool = True,
    batched: str = "auto",
    log: Sequence[str] = (),
) -> StudyOutcome:
    """Run (or resume) every unfinished run of ``study``, storing results in ``store_path``.

    Safe to call from several processes at once on one store: each run is trained once.
    Ctrl-C puts the runs in flight back to pending and returns with ``interrupted=True``.
    ``workers``: local worker processes, or ``"auto"`` (one per idle core; the command
    line's default). ``batched`` (auto, on, off): whether the local executor trains runs of
    one dataset and model together in one vectorized pass (:func:`group_size`); Ray trains
    one run per task. ``log``: where each run is mirrored as it trains
    (:mod:`annealbench.tracking`: ``tensorboard:DIR``, ``mlflow:URI``). Everything is
    checked first (:func:`preflight`): a study that cannot run stores nothing.
    """

    preflight(study, store_path, executor=executor, workers=workers, threads=threads,
              data_root=data_root, checkpoint_dir=checkpoint_dir, address=address,
              cpus_per_run=cpus_per_run, gpu_fraction=gpu_fraction,
              max_retries=max_retries, batched=batched, log=log)  # fmt: skip
    ckpt: str | Path = checkpoint_dir or default_checkpoint_dir(store_path)
    if not is_uri(ckpt):
        ckpt = Path(ckpt)
    how = dict(executor=executor, workers=workers, threads=threads, data_root=data_root,
               address=address, cpus_per_run=cpus_per_run, gpu_fraction=gpu_fraction,
               max_retries=max_retries, progress=progress, log=tuple(log))  # fmt: skip
    with Store(store_path) as store:
        study_id, study = grow_study(store, study)  # the study as stored: maybe a larger grid
        if retry_failed:
            store.retry_failed(study_id)
        made = isinstance(ckpt, Path) and not ckpt.exists()  # the first checkpoint makes it
        if study.tune_scales:
            from annealbench import tuning

            print(tuning.budget_line(study))
        driver, interrupted = _train_branching(store, study, study_id, ckpt, batched, how)
        if study.tune_scales and not interrupted and driver.fatal is None:
            chosen, added = tuning.add_final_runs(store, study, study_id)
            if chosen:
                print(
                    tuning.choice_line(chosen) + (f" ({added} final runs added)" if added else "")
                )
            if added or _counts(store, study.name).get("pending"):
                searched = driver
                driver, interrupted = _train_branching(store, study, study_id, ckpt, batched, how)
                driver.failures[:0] = searched.failures
        final = _counts(store, study.name)
        if made and not (final.get("running") or final.get("pending")):
            with contextlib.suppress(OSError):  # not empty (another study's), or gone
                Path(ckpt).rmdir()
        return StudyOutcome(
            study.name, study.n_runs, final, interrupted, driver.failures, driver.fatal
        )


@dataclass(frozen=True)
class Branch:
    """A shorter WSD budget that may start from its full-budget trunk's checkpoint: the two
    runs take the same rates for the first ``epoch`` epochs (the warmup and plateau)."""

    run_id: int
    run_key: str
    config: RunConfig
    trunk: RunConfig
    epoch: int


def find_branches(store: Store, study: Study) -> dict[int, list[Branch]]:
    """The study's pending shorter-budget runs that share a trunk with a full-budget run
    still to train, by the trunk's run id (:meth:`RatePlan.shared_updates`)."""
    from annealbench.training.parts import RatePlan, updates_per_epoch

    if not study.budgets:
        return {}
    runs = store.runs_frame(study.name)
    by_key = {row.run_key: row for row in runs.itertuples()}
    out: dict[int, list[Branch]] = {}
    for row in runs[(runs["budget"] < 100) & (runs["status"] == "pending")].itertuples():
        config = RunConfig.from_dict(json.loads(row.config))
        trunk = replace(config, epochs=config.full_epochs, full_epochs=None)
        stem = by_key.get(trunk.key())
        if stem is None or stem.status not in ("pending", "running"):
            continue  # its trunk trained already (its checkpoint is gone): from scratch
        steps = updates_per_epoch(config)
        shared = RatePlan.for_run(config, steps).shared_updates() // steps
        if shared:
            branch = Branch(int(row.run_id), row.run_key, config, trunk, shared)
            out.setdefault(int(stem.run_id), []).append(branch)
    return out


def _train_branching(
    store: Store, study: Study, study_id: int, ckpt: str | Path, batched: str,
    how: Mapping[str, Any],
) -> tuple[_Driver, bool]:  # fmt: skip
    """Train every pending run; shorter WSD budgets whose trunk trains now wait for it and
    then start from the checkpoint it left at their branch epoch (:func:`find_branches`)."""
    branches = find_branches(store, study)
    if not branches:
        return _train_pending(store, study, study_id, ckpt, batched, how)
    driver, interrupted = _train_pending(store, study, study_id, ckpt, batched, how, branches)
    if interrupted or driver.fatal is not None:
        return driver, interrupted
    first = driver
    driver, interrupted = _train_pending(store, study, study_id, ckpt, batched, how)
    driver.failures[:0] = first.failures
    saved = sum(first.branched.values())
    if saved:
        epochs = sum(b.config.epochs for bs in branches.values() for b in bs)
        print(
            f"budgets: {len(first.branched)} shorter WSD run(s) started from their full-budget "
            f"trunk's checkpoint: {saved} of their {epochs} epochs not trained again "
            f"({100 * saved / epochs:.0f}% of their compute saved)"
        )
    return driver, interrupted


def _train_pending(
    store: Store, study: Study, study_id: int, ckpt: str | Path, batched: str,
    how: Mapping[str, Any], branches: Mapping[int, list[Branch]] | None = None,
) -> tuple[_Driver, bool]:  # fmt: skip
    """Train every pending run of the study now in the store (the driver, and whether it
    was interrupted); Ctrl-C puts the runs in flight back. ``branches``: runs held back
    while their trunks train, which write their checkpoints at the branch epochs."""
    from annealbench import executors

    counts = _counts(store, study.name)
    finished = sum(counts.get(s, 0) for s in ("done", "diverged", "failed"))
    device = study.template().device
    loggers: list[Any] = []
    if how["log"]:
        from annealbench import tracking

        loggers = tracking.open_all(how["log"], study.name)
    driver = _Driver(
        store, study_id, study.n_runs, finished, ckpt, how["max_retries"], how["progress"],
        device, batched if how["executor"] == "local" else "off", loggers, branches or {},
    )  # fmt: skip
    if driver.loggers:  # runs finished before this command are mirrored too (a new --log)
        from annealbench import tracking

        for claim, status, epochs in tracking.finished_runs(store, study.name):
            driver._tell("finished", claim, status, epochs)
    options = {k: v for k, v in how.items() if k not in ("executor", "log")}
    chosen = executors.make(how["executor"], device=device, **options)
    interrupted = False
    try:
        chosen.run_all(driver)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # Whatever stopped us (Ctrl-C, a full disk): stop the workers first, so none
        # writes a checkpoint after its run is released, then give the runs back.
        chosen.stop()
        released = driver.release_all()
        driver.close()
    if interrupted:
        print(
            f"\ninterrupted: {len(released)} run(s) in flight put back to pending, "
            "their last epoch checkpoints kept.",
            file=sys.stderr,
        )
    return driver, interrupted


def resume_hint(argv: Sequence[str] | None = None) -> str:
    """The command line that resumes the study: the same command again."""
    args = list(sys.argv if argv is None else argv)
    args[0] = Path(args[0]).name
    return " ".join(shlex.quote(a) for a in args)
