"""One training run: (dataset, model, method, seed, epochs, options) -> per-epoch metrics.

The hot loop touches only tensors: the whole dataset sits on the device, an epoch's batch
order is one ``randperm``, augmentation is batched tensor code. Randomness comes from
two generators seeded by the run's seed alone, never by the method, so for one seed
every method starts from the same weights and sees the same batches: runs are paired.

Every epoch ends with an atomic checkpoint (model, optimizer, scheduler, generators,
metrics). A run restarted from it continues exactly where it stopped: on the CPU its
final numbers equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from annealbench import data as data_mod
from annealbench import methods as methods_mod
from annealbench import models as models_mod
from annealbench.torch_scheduler import AnnealingLR

__all__ = [
    "RunConfig",
    "EpochRecord",
    "RunResult",
    "ConfigError",
    "CheckpointError",
    "train",
    "resolve_device",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = 1
DIVERGED = "training loss became non-finite"
EVAL_BATCH = 1000

# Fields that do not change a run's numbers (where it runs), left out of its key.
_NOT_IN_KEY = frozenset({"device"})


class ConfigError(ValueError):
    """A run configuration that cannot be trained; the message says what to change."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; a plain value that can be printed and stored.

    ``custom_method`` carries the definition of a user-defined method (see
    :mod:`annealbench.methods`) so a run can be trained in another process or machine.
    """

    dataset: str
    model: str
    method: str
    seed: int = 0
    epochs: int = 100
    batch_size: int = 128
    subset: int | None = None
    step_per: Literal["iteration", "epoch"] = "iteration"
    device: str = "auto"
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False
    custom_method: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.custom_method is None and not methods_mod.is_builtin(self.method):
            try:
                object.__setattr__(self, "custom_method", methods_mod.get(self.method).to_config())
            except methods_mod.MethodError as exc:
                raise ConfigError(str(exc)) from None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming every bad field and the valid choices."""
        problems = []
        if self.dataset not in data_mod.names():
            problems.append(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(data_mod.names())}"
            )
        if self.model not in models_mod.names():
            problems.append(f"unknown model {self.model!r}; valid: {', '.join(models_mod.names())}")
        try:
            self.method_spec()
        except methods_mod.MethodError as exc:
            problems.append(str(exc))
        for name in ("seed", "epochs", "batch_size"):
            value = getattr(self, name)
            low = 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            problems.append(f"subset must be an integer >= 1 or None, got {self.subset!r}")
        if self.step_per not in ("iteration", "epoch"):
            problems.append(f"step_per must be 'iteration' or 'epoch', got {self.step_per!r}")
        if problems:
            raise ConfigError("; ".join(problems))

    def method_spec(self) -> methods_mod.Method:
        if self.custom_method is not None:
            return methods_mod.Method.from_config(self.custom_method)
        return methods_mod.get(self.method)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; valid: {sorted(known)}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that change a run's numbers."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_KEY}

    def key(self) -> str:
        """A stable short hash of :meth:`identity` (file names, store lookups)."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.method}/seed{self.seed}"

    def __hash__(self) -> int:  # custom_method is a dict; hash the canonical identity
        return hash((self.key(), self.device))


@dataclass
class EpochRecord:
    """Metrics of one epoch; accuracies in percent, losses per sample."""

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    wall_time: float


@dataclass
class RunResult:
    config: RunConfig
    status: Literal["done", "diverged"]
    epochs: list[EpochRecord]
    error: str | None = None

    @property
    def final(self) -> EpochRecord | None:
        return self.epochs[-1] if self.epochs else None


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but this machine has no CUDA GPU")
    return dev


# --------------------------------------------------------------------------- checkpoints


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _describe_difference(saved: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    return "; ".join(diffs)


def load_checkpoint(path: Path, config: RunConfig) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only) and check it belongs to ``config``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, foreign pickle
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
            "delete it to restart the run from scratch"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an annealbench checkpoint (format 1)")
    if state.get("config") != config.identity():
        diff = _describe_difference(state.get("config") or {}, config.identity())
        raise CheckpointError(
            f"checkpoint {path} belongs to a different run ({diff}); "
            "use another checkpoint path or delete it"
        )
    return state


# --------------------------------------------------------------------------- the run


@dataclass
class _Parts:
    """What a run is made of, built in one place for fresh starts and resumes alike."""

    data: data_mod.DeviceData
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: AnnealingLR
    order_gen: torch.Generator
    aug_gen: torch.Generator
    steps_per_epoch: int
    forward: Callable[[torch.Tensor], torch.Tensor]


def _build(config: RunConfig, device: torch.device, data_root: str | Path | None) -> _Parts:
    data = data_mod.load(config.dataset, root=data_root, device=device, subset=config.subset)
    spec = data.spec
    method = config.method_spec()
    # Same seed -> same initial weights, whatever the method (paired trials).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = models_mod.build(config.model, spec.input_shape, spec.num_classes)
        except ValueError as exc:
            raise ConfigError(
                f"model {config.model!r} does not fit {config.dataset}: {exc}"
            ) from None
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = method.make_optimizer(model.parameters())
    n = data.train_x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * (steps_per_epoch if config.step_per == "iteration" else 1)
    deep = models_mod.spec(config.model).deep
    scheduler = AnnealingLR(optimizer, method.schedule_for(config.model, deep), total)
    # Batch order on the CPU (cheap, identical on every device); augmentation on the device.
    order_gen = torch.Generator(device="cpu").manual_seed(config.seed)
    aug_gen = torch.Generator(device=device).manual_seed(config.seed + 1_000_003)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if config.compile:
        forward = torch.compile(model)  # type: ignore[assignment]
    return _Parts(data, model, optimizer, scheduler, order_gen, aug_gen, steps_per_epoch, forward)


def _autocast(config: RunConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


def _train_epoch(
    config: RunConfig, parts: _Parts, device: torch.device, bar: Any
) -> tuple[float, float, float]:
    """One pass over the training set; returns (last lr, mean loss, accuracy %)."""
    data, model, opt, sched = parts.data, parts.model, parts.optimizer, parts.scheduler
    spec = data.spec
    model.train()
    n = data.train_x.shape[0]
    order = torch.randperm(n, generator=parts.order_gen).to(device, non_blocking=True)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    check_each_step = device.type == "cpu"  # free on the CPU; a sync on a GPU
    lr = opt.param_groups[0]["lr"]
    for i in range(parts.steps_per_epoch):
        idx = order[i * config.batch_size : (i + 1) * config.batch_size]
        x = data.train_x.index_select(0, idx)
        y = data.train_y.index_select(0, idx)
        if spec.crop or spec.flip:
            x = data_mod.augment(x, spec, parts.aug_gen)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(config, device):
            out = parts.forward(x)
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        if config.step_per == "iteration":
            sched.step()
        loss_d = loss.detach()
        loss_sum += loss_d.double() * y.shape[0]
        correct += (out.detach().argmax(1) == y).sum()
        if check_each_step and not torch.isfinite(loss_d):
            return lr, float("nan"), float(correct) * 100.0 / n
        if bar is not None:
            bar.update(1)
    if config.step_per == "epoch":
        sched.step()
    return lr, float(loss_sum) / n, float(correct) * 100.0 / n


@torch.no_grad()
def _evaluate(config: RunConfig, parts: _Parts, device: torch.device) -> tuple[float, float]:
    """Mean loss and accuracy (%) on the full test set."""
    data = parts.data
    parts.model.eval()
    n = data.test_x.shape[0]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, n, EVAL_BATCH):
        x = data.test_x[start : start + EVAL_BATCH]
        y = data.test_y[start : start + EVAL_BATCH]
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(config, device):
            out = parts.forward(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
    return float(loss_sum) / n, float(correct) * 100.0 / n


def _state(config: RunConfig, parts: _Parts, records: list[EpochRecord], status: str):
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.identity(),
        "status": status,
        "epoch": len(records),
        "records": [asdict(r) for r in records],
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "order_gen": parts.order_gen.get_state(),
        "aug_gen": parts.aug_gen.get_state(),
    }


def _restore(parts: _Parts, state: dict[str, Any]) -> list[EpochRecord]:
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.order_gen.set_state(state["order_gen"])
    parts.aug_gen.set_state(state["aug_gen"].to(parts.aug_gen.get_state().device))
    return [EpochRecord(**r) for r in state["records"]]


def train(
    config: RunConfig,
    *,
    data_root: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: bool = False,
) -> RunResult:
    """Train one run to the end (or to divergence) and return its per-epoch metrics.

    With ``checkpoint_path``, the run saves a checkpoint after every epoch and, if one
    exists, continues from it. ``on_epoch`` is called after each new epoch's checkpoint
    is on disk. A non-finite training loss stops the run with status ``diverged``.
    """
    config.validate()
    device = resolve_device(config.device)
    parts = _build(config, device, data_root)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    records: list[EpochRecord] = []
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, config)
        records = _restore(parts, state)
        if state["status"] == "diverged":
            return RunResult(config, "diverged", records, DIVERGED)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.epochs * parts.steps_per_epoch,
            initial=len(records) * parts.steps_per_epoch,
            desc=config.label(),
            unit="step",
            leave=False,
        )
    try:
        for epoch in range(len(records) + 1, config.epochs + 1):
            start = time.perf_counter()
            lr, train_loss, train_acc = _train_epoch(config, parts, device, bar)
            test_loss, test_acc = _evaluate(config, parts, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record = EpochRecord(
                epoch=epoch,
                lr=float(lr),
                train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                wall_time=time.perf_counter() - start,
            )
            records.append(record)
            diverged = not math.isfinite(train_loss)
            status = "diverged" if diverged else "running"
            if ckpt is not None:
                _save_atomic(_state(config, parts, records, status), ckpt)
            if on_epoch is not None:
                on_epoch(record)
            if bar is not None:
                bar.set_postfix(epoch=epoch, test_acc=f"{test_acc:.2f}")
            if diverged:
                return RunResult(config, "diverged", records, DIVERGED)
    finally:
        if bar is not None:
            bar.close()
    return RunResult(config, "done", records)
