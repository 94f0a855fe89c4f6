"""The one training loop, for one run or a batched group of runs.

The loop owns everything a run's bookkeeping needs: epochs, each run's batch order (one
``randperm`` of its own generator per epoch), augmentation (its own generator), its rates
(:class:`~annealbench.training.parts.RatePlan`, from its optimizer-update count), loss and
accuracy, divergence, evaluation, records, atomic checkpoints, resume and progress. What
differs between one run and a group is the *stepper*: one optimizer update over a batch
for one model (:class:`~annealbench.training.single.SingleStepper`) or for K stacked
models (:class:`~annealbench.training.batched.GroupStepper`), and how its state is saved
and restored.

Randomness comes from two generators seeded by the run's seed alone, never by the
method, so for one seed every method starts from the same weights and sees the same
batches: runs are paired. On the CPU a run's numbers are bit for bit the same after any
number of interruptions (same thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from annealbench import data as data_mod
from annealbench.errors import ConfigError
from annealbench.training import checkpoint as ckpt
from annealbench.training.config import EpochRecord, RunConfig, RunResult
from annealbench.training.parts import RatePlan, initial_model, resolve_device, steps_per_epoch

__all__ = [
    "DIVERGED",
    "Stepper",
    "Trainer",
    "augment_seed",
    "fit",
    "load_data",
    "start",
    "train",
    "train_group",
]

DIVERGED = "training loss became non-finite"
#: (index of the run in the caller's list, its new epoch): called once the checkpoint is on disk.
EpochHook = Callable[[int, EpochRecord], None]


def augment_seed(seed: int, epoch: int) -> int:
    """The augmentation generator's seed for one epoch of one run (its trial's seed).

    Reseeding every epoch, rather than saving the generator's state, lets a checkpoint
    written on a GPU resume on the CPU and the other way round (a CUDA generator's state
    does not load into a CPU one), and keeps trials paired across methods.
    """
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63)


class Stepper(Protocol):
    """One optimizer update over a batch, for one model or K stacked ones (rows)."""

    def begin_epoch(self, rates: list[list[float]]) -> None: ...
    def step(self, index: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]: ...
    def evaluate(
        self, x_all: torch.Tensor, y_all: torch.Tensor, rows: list[int] | None = None
    ) -> list[tuple[float, float]]: ...
    def retire(self, rows: list[int]) -> None: ...
    def state(self, row: int) -> dict[str, Any]: ...
    def load(self, row: int, state: dict[str, Any]) -> None: ...


@dataclass
class _Run:
    """One run's bookkeeping in the loop."""

    index: int  # position in the caller's list
    config: RunConfig
    plan: RatePlan
    order_gen: torch.Generator
    aug_gen: torch.Generator
    checkpoint: ckpt.Location | None
    records: list[EpochRecord] = field(default_factory=list)
    status: str = "running"  # running, done or diverged
    updates: int = 0
    resumed_from: int = 0  # epochs restored from the checkpoint


@dataclass
class _Epoch:
    """What one epoch of training gave one run (test metrics filled in after evaluation)."""

    lr: float
    loss: float
    accuracy: float
    test: tuple[float, float] | None = None
    state: dict[str, Any] | None = None  # taken when the run left the stack mid-epoch
    val: tuple[float, float] | None = None  # with a validation split


class Trainer:
    """Runs at the same epoch, trained together by one stepper until each is done."""

    def __init__(
        self,
        runs: Sequence[_Run],
        states: Sequence[dict[str, Any] | None],
        *,
        batched: bool,
        data: data_mod.DeviceData,
        device: torch.device,
    ) -> None:
        self.data, self.device = data, device
        self.steps = steps_per_epoch(data.train_x.shape[0], runs[0].config.batch_size)
        shape, classes = data.spec.input_shape, data.spec.num_classes
        models = [initial_model(r.config, shape, classes, device) for r in runs]
        if batched:
            from annealbench.training.batched import GroupStepper

            self.stepper: Stepper = GroupStepper([r.config for r in runs], models, device)
            order = self.stepper.order
        else:
            from annealbench.training.single import SingleStepper

            (run,), (model,) = runs, models
            self.stepper = SingleStepper(run.config, model, device)
            order = [0]
        self.runs = list(runs)
        self.active = [runs[i] for i in order]  # row i of the stepper is active[i]
        for row, i in enumerate(order):
            if states[i] is not None:
                self.stepper.load(row, states[i])
        self.check_each_step = device.type == "cpu"  # free on the CPU; a sync on a GPU
        self.bar: Any = None

    # ----------------------------------------------------------------- one epoch

    def _batch(self, orders: torch.Tensor, rows: list[int], step: int) -> tuple[torch.Tensor, ...]:
        """Each row's batch ``step`` of its own order, augmented by its own generator."""
        data, size = self.data, self.active[0].config.batch_size
        idx = orders[:, step * size : (step + 1) * size]
        k, b = idx.shape
        x = data.train_x.index_select(0, idx.reshape(-1)).view(k, b, *data.spec.input_shape)
        y = data.train_y.index_select(0, idx.reshape(-1)).view(k, b)
        if data.spec.augments:
            gens = [self.active[r].aug_gen for r in rows]
            x = torch.stack([data.spec.augment(x[i], gen) for i, gen in enumerate(gens)])
        return x, y

    def train_epoch(self) -> dict[int, _Epoch]:
        """One pass over the training set for every active run, by run index.

        A run whose loss turns non-finite leaves the stack at that step (its loss NaN),
        evaluated and saved as it stands; the others go on.
        """
        n = self.data.train_x.shape[0]
        runs = list(self.active)
        for run in runs:  # from (seed, epoch) alone: a checkpoint resumes on any device
            run.aug_gen.manual_seed(augment_seed(run.config.seed, len(run.records)))
        all_orders = torch.stack([torch.randperm(n, generator=r.order_gen) for r in runs])
        orders = all_orders = all_orders.to(self.device, non_blocking=True)
        rates = [r.plan.rates(r.updates, self.steps) for r in runs]
        self.stepper.begin_epoch(rates)
        rows = list(range(len(runs)))  # stepper row -> position in ``runs``
        rows_t = torch.arange(len(runs), device=self.device)
        loss_sum = torch.zeros(len(runs), device=self.device, dtype=torch.float64)
        correct = torch.zeros(len(runs), device=self.device, dtype=torch.int64)
        out: dict[int, _Epoch] = {}
        for step in range(self.steps):
            x, y = self._batch(orders, rows, step)
            loss, logits = self.stepper.step(step, x, y)
            loss_sum.index_add_(0, rows_t, loss.double() * y.shape[1])
            correct.index_add_(0, rows_t, (logits.argmax(-1) == y).sum(1))
            if self.bar is not None:
                self.bar.update(len(rows))
            if self.check_each_step and not bool(torch.isfinite(loss).all()):
                bad = [i for i in range(len(rows)) if not math.isfinite(float(loss[i]))]
                for i in bad:
                    run = runs[rows[i]]
                    run.updates += step + 1
                    accuracy = float(correct[rows[i]]) * 100.0 / n
                    (test,), (val,) = self._evaluate([i])
                    state = self.stepper.state(i)
                    out[run.index] = _Epoch(
                        rates[rows[i]][step], math.nan, accuracy, test, state, val
                    )
                    run.status = "diverged"
                self.stepper.retire(bad)
                self.active = [r for j, r in enumerate(self.active) if j not in bad]
                rows = [r for j, r in enumerate(rows) if j not in bad]
                if not rows:
                    break
                rows_t = torch.tensor(rows, device=self.device)
                orders = all_orders.index_select(0, rows_t)
        for pos in rows:
            run = runs[pos]
            run.updates += self.steps
            loss_mean = float(loss_sum[pos]) / n
            if not math.isfinite(loss_mean):
                run.status = "diverged"
            accuracy = float(correct[pos]) * 100.0 / n
            out[run.index] = _Epoch(rates[pos][-1], loss_mean, accuracy)
        return out

    def _evaluate(self, rows: list[int] | None) -> tuple[list[Any], list[Any]]:
        """(test, validation) loss and accuracy of stepper ``rows`` (None: all active);
        validation ones are None without a validation split."""
        data = self.data
        tests = self.stepper.evaluate(data.test_x, data.test_y, rows)
        if data.val_x is None:
            return tests, [None] * len(tests)
        return tests, self.stepper.evaluate(data.val_x, data.val_y, rows)

    def epoch(self, on_epoch: EpochHook | None) -> None:
        """Train, evaluate, checkpoint every run; then report each (all files on disk first)."""
        start = time.perf_counter()
        trained = self.train_epoch()
        stacked = list(self.active)
        if stacked:
            tests, vals = self._evaluate(None)
            for row, (run, test, val) in enumerate(zip(stacked, tests, vals, strict=True)):
                trained[run.index].test, trained[run.index].val = test, val
                if run.checkpoint is not None:
                    trained[run.index].state = self.stepper.state(row)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        # Each run's share of the group's time, so the runs' times add up to the machine's.
        wall = (time.perf_counter() - start) / len(trained)
        runs = {r.index: r for r in self.runs}
        reports = [(i, self._record(runs[i], trained[i], wall)) for i in sorted(trained)]
        finished = [row for row, run in enumerate(stacked) if run.status != "running"]
        if finished:
            self.stepper.retire(finished)
            self.active = [run for run in stacked if run.status == "running"]
        if on_epoch is not None:
            for index, record in reports:
                on_epoch(index, record)

    def _record(self, run: _Run, result: _Epoch, wall: float) -> EpochRecord:
        """Append the run's record for the epoch and checkpoint it."""
        assert result.test is not None
        record = EpochRecord(
            epoch=len(run.records) + 1,
            lr=float(result.lr),
            train_loss=result.loss,
            train_acc=result.accuracy,
            test_loss=result.test[0],
            test_acc=result.test[1],
            wall_time=wall,
            val_loss=None if result.val is None else result.val[0],
            val_acc=None if result.val is None else result.val[1],
        )
        run.records.append(record)
        if run.status == "running" and len(run.records) >= run.config.epochs:
            run.status = "done"
        if run.checkpoint is not None:
            assert result.state is not None
            ckpt.save_atomic(
                {
                    "format": ckpt.FORMAT,
                    "config": run.config.identity(),
                    "status": "diverged" if run.status == "diverged" else "running",
                    "epoch": len(run.records),
                    "records": [asdict(r) for r in run.records],
                    "updates": run.updates,
                    "model": result.state["model"],
                    "optimizer": result.state["optimizer"],
                    "order_gen": run.order_gen.get_state(),
                },
                run.checkpoint,
            )
        return record

    def run(self, on_epoch: EpochHook | None = None) -> None:
        """Train every run to its last epoch (or to divergence)."""
        while self.active:
            self.epoch(on_epoch)


# --------------------------------------------------------------------------- entry points


def _prepare(
    configs: Sequence[RunConfig],
    checkpoint_paths: Sequence[str | Path | None],
    device: torch.device,
    steps: int,
) -> tuple[list[_Run], list[dict[str, Any] | None]]:
    """Each run's bookkeeping, restored from its checkpoint where one exists."""
    runs, states = [], []
    for index, (config, path) in enumerate(zip(configs, checkpoint_paths, strict=True)):
        run = _Run(
            index,
            config,
            RatePlan.for_run(config, steps),
            # Batch order on the CPU (cheap, identical on every device); augmentation on it.
            torch.Generator(device="cpu").manual_seed(config.seed),
            torch.Generator(device=device),  # reseeded every epoch: augment_seed
            ckpt.Location.of(path) if path is not None else None,
        )
        state = None
        if run.checkpoint is not None and run.checkpoint.exists():
            state = ckpt.load_checkpoint(run.checkpoint, config)
            run.records = state["records"]
            run.resumed_from = len(run.records)
            run.updates = int(state["updates"])
            run.order_gen.set_state(state["order_gen"])
            if state["status"] == "diverged":
                run.status = "diverged"
            elif len(run.records) >= config.epochs:
                run.status = "done"
        runs.append(run)
        states.append(state)
    return runs, states


def _setup(
    configs: Sequence[RunConfig],
    batched: bool,
    data_root: str | Path | None,
    checkpoint_paths: Sequence[str | Path | None] | None,
) -> tuple[data_mod.DeviceData, torch.device, list[_Run], list[dict[str, Any] | None]]:
    """Check the runs, load their data once, restore each run from its checkpoint."""
    if not configs:
        raise ConfigError("training needs at least one run")
    for config in configs:
        config.validate()
    if not batched and len(configs) != 1:
        raise ConfigError(f"{len(configs)} runs to train alone; train them one by one")
    if batched:
        from annealbench.training.batched import check_batchable

        check_batchable(configs)
    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * len(configs)
    if len(paths) != len(configs):
        raise ConfigError(
            f"{len(paths)} checkpoint paths for {len(configs)} runs; "
            "give one per run (None for no checkpoint)"
        )
    first = configs[0]
    device = resolve_device(first.device)
    data = load_data(first, data_root, device)
    steps = steps_per_epoch(data.train_x.shape[0], first.batch_size)
    runs, states = _prepare(configs, paths, device, steps)
    return data, device, runs, states


def load_data(
    config: RunConfig, data_root: str | Path | None, device: torch.device
) -> data_mod.DeviceData:
    """The run's dataset on ``device``: its subset, its validation split; a user dataset
    defined in another process is defined here from the definition the run carries."""
    if config.custom_dataset is not None:
        data_mod.register(data_mod.from_config(config.custom_dataset), replace=True)
    return data_mod.load(
        config.dataset, root=data_root, device=device, subset=config.subset,
        validation=config.validation, scaling=config.input_scaling,
    )  # fmt: skip


def start(
    configs: Sequence[RunConfig], *, batched: bool, data_root: str | Path | None = None
) -> Trainer:
    """A :class:`Trainer` of fresh runs, without checkpoints: call ``train_epoch()`` or
    ``run()`` (benchmarks and notebooks)."""
    data, device, runs, states = _setup(configs, batched, data_root, None)
    return Trainer(runs, states, batched=batched, data=data, device=device)


def fit(
    configs: Sequence[RunConfig],
    *,
    batched: bool,
    data_root: str | Path | None = None,
    checkpoint_paths: Sequence[str | Path | None] | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """Train ``configs`` (one run, or a batched group) to the end; one result per config.

    With checkpoint paths (one per run, or None), every epoch ends with an atomic
    checkpoint per run and a run with a checkpoint continues from it. Resumed runs of a
    group that stand at different epochs train as separate groups, furthest behind first.
    """
    data, device, runs, states = _setup(configs, batched, data_root, checkpoint_paths)
    pending = [r for r in runs if r.status == "running"]
    steps = steps_per_epoch(data.train_x.shape[0], configs[0].batch_size)
    bar = _bar(pending, steps, progress)
    try:
        for epoch in sorted({len(r.records) for r in pending}):
            cohort = [r for r in pending if len(r.records) == epoch]
            states_of = [states[r.index] for r in cohort]
            trainer = Trainer(cohort, states_of, batched=batched, data=data, device=device)
            trainer.bar = bar
            trainer.run(on_epoch)
    finally:
        if bar is not None:
            bar.close()
    return [_result(run) for run in runs]


def _bar(pending: list[_Run], steps: int, enabled: bool) -> Any:
    if not enabled or not pending:
        return None
    from tqdm.auto import tqdm

    total = sum(r.config.epochs * steps for r in pending)
    done = sum(len(r.records) * steps for r in pending)
    label = pending[0].config.label() if len(pending) == 1 else f"{len(pending)} runs batched"
    return tqdm(total=total, initial=done, desc=label, unit="step", leave=False)


def _result(run: _Run) -> RunResult:
    diverged = run.status == "diverged"
    status = "diverged" if diverged else "done"
    error = DIVERGED if diverged else None
    return RunResult(run.config, status, run.records, error, run.resumed_from)


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
    hook = None if on_epoch is None else (lambda _index, record: on_epoch(record))
    (result,) = fit(
        [config], batched=False, data_root=data_root, checkpoint_paths=[checkpoint_path],
        on_epoch=hook, progress=progress,
    )  # fmt: skip
    return result


def train_group(
    configs: Sequence[RunConfig],
    *,
    data_root: str | Path | None = None,
    checkpoint_paths: Sequence[str | Path | None] | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """Train ``configs`` as one vectorized group; one :class:`RunResult` per config, in order.

    The runs must share dataset, model (without BatchNorm), batch size, subset and device
    (:func:`~annealbench.training.batched.check_batchable`); they may differ in method,
    seed, epochs and ``step_per``. Checkpoints are those of :func:`train`, interchangeable.
    ``on_epoch(index, record)`` is called for run ``configs[index]``. ``wall_time`` is the
    run's share of the group's epoch time.
    """
    return fit(
        configs, batched=True, data_root=data_root, checkpoint_paths=checkpoint_paths,
        on_epoch=on_epoch, progress=progress,
    )  # fmt: skip
