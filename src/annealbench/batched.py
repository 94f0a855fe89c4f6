"""Many runs of one model on one dataset, trained together: stacked parameters and ``vmap``.

The runs of one row of the paper's grid (12 methods x 10 seeds) share the architecture and
the data, so their forward and backward passes can be one vectorized computation
(``torch.func``: ``stack_module_state``, ``functional_call``, ``vmap`` of ``grad``). Each
run keeps everything that makes it itself, taken from the engine's own
:func:`annealbench.engine._build` for its config:

- its initial weights (the same ``torch.manual_seed(seed)`` + ``models.build``);
- its batch order (its seed's CPU generator, one ``randperm`` per epoch) and augmentation
  generator, so a run sees the same batches in a group as alone;
- its learning rate at every step, ``schedule(min(k, T) / T)`` from its own ``AnnealingLR``;
- its optimizer state; the updates below are torch.optim's single-tensor formulas (SGD
  with momentum and weight decay, RMSprop, Adam, AdamW) written on stacked tensors.

A group writes the engine's own checkpoint format, one file per run, so a group resumes
batched or one run at a time with :func:`annealbench.engine.train`, interchangeably.
Results equal separate runs up to float rounding (batched matmuls round differently).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from annealbench import data as data_mod
from annealbench import engine
from annealbench import models as models_mod
from annealbench.engine import DIVERGED, ConfigError, EpochRecord, RunConfig, RunResult

__all__ = [
    "BatchedGroup",
    "OptimizerRule",
    "check_batchable",
    "should_batch",
    "train_batched",
    "optimizer_rule",
    "MIN_RUNS_CPU",
]

#: On the CPU a group wins only from this many runs on (measured: benchmarks/README.md).
MIN_RUNS_CPU = 4
#: Models a group trains faster than one run at a time on the CPU (measured:
#: benchmarks/README.md). nn3's larger matmuls already run well alone (a group measured
#: 0.84-0.97x); the convolutional models' vmapped convolutions become grouped convolutions,
#: whose CPU backward is slow (lenet4 0.75-0.97x, vgg9 0.94x).
CPU_BATCH_MODELS = frozenset({"nn2"})


# --------------------------------------------------------------------------- optimizer rules


@dataclass(frozen=True)
class OptimizerRule:
    """An optimizer kind and its settings apart from the rate: runs sharing one update together."""

    kind: str  # "sgd", "rmsprop", "adam" or "adamw"
    settings: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.settings)[name]


_KINDS: dict[type, str] = {
    torch.optim.SGD: "sgd",
    torch.optim.RMSprop: "rmsprop",
    torch.optim.Adam: "adam",
    torch.optim.AdamW: "adamw",
}
# The settings each kind's batched update implements, and the values it needs for the rest.
_USED = {
    "sgd": ("momentum", "weight_decay"),
    "rmsprop": ("alpha", "eps", "weight_decay"),
    "adam": ("betas", "eps", "weight_decay"),
    "adamw": ("betas", "eps", "weight_decay"),
}
_REQUIRED = {
    "sgd": {"dampening": 0, "nesterov": False, "maximize": False},
    "rmsprop": {"momentum": 0, "centered": False, "maximize": False},
    "adam": {"amsgrad": False, "maximize": False},
    "adamw": {"amsgrad": False, "maximize": False},
}


def optimizer_rule(optimizer: torch.optim.Optimizer) -> OptimizerRule:
    """What the batched update needs from a torch optimizer; ConfigError for what it lacks."""
    kind = _KINDS.get(type(optimizer))
    if kind is None:
        raise ConfigError(
            f"batched training supports {', '.join(_KINDS.values())}, "
            f"not {type(optimizer).__name__}"
        )
    group = optimizer.param_groups[0]
    unsupported = [
        f"{name}={group.get(name)!r}"
        for name, value in _REQUIRED[kind].items()
        if group.get(name, value) != value
    ]
    if unsupported:
        raise ConfigError(
            f"batched {kind} does not implement {', '.join(unsupported)}; train these runs alone"
        )
    return OptimizerRule(kind, tuple((name, group[name]) for name in _USED[kind]))


def _method_rule(config: RunConfig) -> OptimizerRule:
    probe = torch.zeros(1, requires_grad=True)
    return optimizer_rule(config.method_spec().make_optimizer([probe]))


# --------------------------------------------------------------------------- the choice


def check_batchable(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` saying why ``configs`` cannot train as one group."""
    if not configs:
        raise ConfigError("a batched group needs at least one run")
    for config in configs:
        config.validate()
    first = configs[0]
    problems: list[str] = []
    for name in ("dataset", "model", "batch_size", "subset"):
        values = sorted({repr(getattr(c, name)) for c in configs})
        if len(values) > 1:
            problems.append(f"runs differ in {name} ({', '.join(values)})")
    devices = sorted({str(engine.resolve_device(c.device)) for c in configs})
    if len(devices) > 1:
        problems.append(f"runs are on different devices ({', '.join(devices)})")
    if models_mod.spec(first.model).has_batchnorm:
        problems.append(
            f"{first.model} has BatchNorm (running statistics are not vmapped); "
            "batched training takes nn2, nn3, lenet4 and vgg9"
        )
    for name in ("bf16", "compile", "channels_last"):
        if any(getattr(c, name) for c in configs):
            problems.append(f"{name} is not supported by batched training")
    for config in configs:
        try:
            _method_rule(config)
        except ConfigError as exc:
            problems.append(f"{config.label()}: {exc}")
    if problems:
        raise ConfigError("these runs cannot train as one batched group: " + "; ".join(problems))


def should_batch(configs: Sequence[RunConfig], device: str | torch.device | None = None) -> bool:
    """Whether training ``configs`` as one group beats training them one after another.

    Never for runs that cannot be grouped (:func:`check_batchable`). On the CPU: only
    :data:`CPU_BATCH_MODELS` (nn2) with at least :data:`MIN_RUNS_CPU` runs, the only case
    measured faster on this project's 2-core CPU (1.15-1.85x); elsewhere a group measured
    slower or within noise, so one at a time is kept. On a GPU: from two runs on, since one
    shallow model at batch 128 leaves the chip mostly idle (an expectation: the GPU
    figures are still to be measured, benchmarks/README.md).
    """
    try:
        check_batchable(configs)
    except ConfigError:
        return False
    dev = engine.resolve_device(str(device) if device is not None else configs[0].device)
    if len(configs) < 2:
        return False
    if dev.type == "cpu":
        return configs[0].model in CPU_BATCH_MODELS and len(configs) >= MIN_RUNS_CPU
    return True


# --------------------------------------------------------------------------- batched updates


def _per_run(values: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """A (k,) float64 vector as float32 (k, 1, ...) views, one per stacked parameter.

    Rates are computed in float64 (Python's float arithmetic, as torch.optim does it) and
    rounded to the parameters' dtype once, as torch rounds a Python scalar ``alpha``.
    """
    cast = values.to(params[0].dtype)
    return [cast.view(-1, *([1] * (p.dim() - 1))) for p in params]


def batched_update(
    rule: OptimizerRule,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    state: dict[str, Any],
    lrs: torch.Tensor | Sequence[float],
) -> None:
    """One optimizer step on stacked (k, ...) tensors, run i at rate ``lrs[i]``, in place.

    torch.optim's single-tensor formulas: weight decay added to the gradient (decoupled for
    AdamW); SGD ``b = mu*b + g`` (first step ``b = g``), ``p -= lr*b``; RMSprop
    ``s = alpha*s + (1-alpha)*g^2``, ``p -= lr*g/(sqrt(s)+eps)``; Adam with bias correction.
    ``state`` holds ``step`` (an int, shared by the k runs) and the stacked buffers;
    ``lrs`` is a float64 tensor on the parameters' device (or a list of floats).
    ``grads`` are consumed: weight decay is added to them in place.
    """
    if not isinstance(lrs, torch.Tensor):
        lrs = torch.tensor(list(lrs), dtype=torch.float64, device=params[0].device)
    with torch.no_grad():
        step = int(state.get("step", 0)) + 1
        state["step"] = step
        wd = float(rule.get("weight_decay"))
        if wd != 0 and rule.kind != "adamw":
            torch._foreach_add_(grads, params, alpha=wd)  # torch: grad.add(param, alpha=wd)
        if rule.kind == "sgd":
            momentum = float(rule.get("momentum"))
            neg_lr = _per_run(-lrs, params)
            if momentum == 0:
                torch._foreach_addcmul_(params, grads, neg_lr)
                return
            bufs = state.get("momentum_buffer")
            if bufs is None:
                bufs = state["momentum_buffer"] = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
            torch._foreach_addcmul_(params, bufs, neg_lr)
        elif rule.kind == "rmsprop":
            alpha, eps = float(rule.get("alpha")), float(rule.get("eps"))
            squares = state.setdefault("square_avg", [torch.zeros_like(p) for p in params])
            torch._foreach_mul_(squares, alpha)
            torch._foreach_addcmul_(squares, grads, grads, value=1 - alpha)
            avg = torch._foreach_sqrt(squares)
            torch._foreach_add_(avg, eps)
            torch._foreach_addcmul_(params, torch._foreach_div(grads, avg), _per_run(-lrs, params))
        else:  # adam, adamw
            beta1, beta2 = (float(b) for b in rule.get("betas"))
            eps = float(rule.get("eps"))
            if rule.kind == "adamw" and wd != 0:
                # torch: param.mul_(1 - lr * weight_decay)
                torch._foreach_mul_(params, _per_run(1 - lrs * wd, params))
            means = state.setdefault("exp_avg", [torch.zeros_like(p) for p in params])
            squares = state.setdefault("exp_avg_sq", [torch.zeros_like(p) for p in params])
            torch._foreach_lerp_(means, grads, 1 - beta1)
            torch._foreach_mul_(squares, beta2)
            torch._foreach_addcmul_(squares, grads, grads, value=1 - beta2)
            correction1 = 1 - beta1**step
            correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = torch._foreach_sqrt(squares)
            torch._foreach_div_(denom, correction2_sqrt)
            torch._foreach_add_(denom, eps)
            neg_step = _per_run(-(lrs / correction1), params)  # torch: value=-(lr / bc1)
            torch._foreach_addcmul_(params, torch._foreach_div(means, denom), neg_step)


_STATE_NAMES = {
    "sgd": ("momentum_buffer",),
    "rmsprop": ("square_avg",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
}


def _state_from_optimizers(
    rule: OptimizerRule, optimizers: Sequence[torch.optim.Optimizer]
) -> dict[str, Any]:
    """Stack the torch.optim states of k runs (empty ones: a fresh start)."""
    per_run = [[opt.state.get(p, {}) for p in opt.param_groups[0]["params"]] for opt in optimizers]
    if not per_run[0][0]:
        if any(s for run in per_run for s in run):
            raise ConfigError("runs of one batched segment must all start fresh or all resume")
        return {"step": 0}
    state: dict[str, Any] = {}
    for name in _STATE_NAMES[rule.kind]:
        state[name] = [
            torch.stack([run[i][name] for run in per_run]) for i in range(len(per_run[0]))
        ]
    if rule.kind == "sgd":
        # torch's SGD keeps no step count; a saved momentum buffer means it has stepped.
        state["step"] = 1
    else:
        steps = {float(s["step"]) for run in per_run for s in run}
        if len(steps) != 1:
            raise ConfigError(f"runs of one batched segment are at different steps {steps}")
        state["step"] = int(steps.pop())
    return state


def _state_to_optimizer(
    rule: OptimizerRule, state: dict[str, Any], row: int, optimizer: torch.optim.Optimizer
) -> None:
    """Write run ``row``'s slice of a stacked state into its torch optimizer (for checkpoints)."""
    if state.get("step", 0) == 0:
        return
    for i, param in enumerate(optimizer.param_groups[0]["params"]):
        entry: dict[str, Any] = {
            name: state[name][i][row].clone() for name in _STATE_NAMES[rule.kind] if name in state
        }
        if rule.kind != "sgd":
            entry["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        optimizer.state[param] = entry


# --------------------------------------------------------------------------- the group


@dataclass
class _Run:
    index: int  # position in the caller's list
    config: RunConfig
    parts: Any  # engine._Parts
    rule: OptimizerRule
    checkpoint: Path | None
    records: list[EpochRecord] = field(default_factory=list)
    status: str = "running"


@dataclass
class _Segment:
    """Consecutive runs of the stack that share one optimizer rule (and so one update)."""

    rule: OptimizerRule
    start: int
    stop: int
    state: dict[str, Any]


class BatchedGroup:
    """K runs of one model and dataset as one stack of parameters; one epoch at a time.

    Built from the engine's own parts for each config (weights, optimizer, scheduler,
    generators), restored from per-run engine checkpoints where they exist.
    """

    def __init__(
        self,
        configs: Sequence[RunConfig],
        *,
        data_root: str | Path | None = None,
        checkpoint_paths: Sequence[str | Path | None] | None = None,
    ) -> None:
        check_batchable(configs)
        if checkpoint_paths is not None and len(checkpoint_paths) != len(configs):
            raise ValueError(
                f"{len(checkpoint_paths)} checkpoint paths for {len(configs)} runs; "
                "give one per run (None for no checkpoint)"
            )
        self.device = engine.resolve_device(configs[0].device)
        runs: list[_Run] = []
        for index, config in enumerate(configs):
            parts = engine._build(config, self.device, data_root)
            path = checkpoint_paths[index] if checkpoint_paths is not None else None
            run = _Run(index, config, parts, optimizer_rule(parts.optimizer), _path(path))
            if run.checkpoint is not None and run.checkpoint.exists():
                saved = engine.load_checkpoint(run.checkpoint, config)
                run.records = engine._restore(parts, saved)
                if saved["status"] == "diverged":
                    run.status = "diverged"
            if run.status == "running" and len(run.records) >= config.epochs:
                run.status = "done"
            runs.append(run)
        self.runs = runs  # every run, in the caller's order
        self.data: data_mod.DeviceData = runs[0].parts.data
        self.batch_size = configs[0].batch_size
        self.steps_per_epoch = runs[0].parts.steps_per_epoch
        self.check_each_step = self.device.type == "cpu"  # free on the CPU; a sync on a GPU
        # A parameter-free copy of the architecture for functional_call.
        self._base = copy.deepcopy(runs[0].parts.model).to("meta")
        self._loss_grad = vmap(grad_and_value(self._loss, has_aux=True))
        self._logits = vmap(self._forward, in_dims=(0, None))
        self.active: list[_Run] = []
        self.params: dict[str, torch.Tensor] = {}
        self.segments: list[_Segment] = []
        if self.pending():
            self._gather()

    # ----------------------------------------------------------------- stacking

    def _stack(self, active: list[_Run]) -> None:
        """(Re)build the stacked parameters and optimizer states from the runs' parts."""
        # Runs sharing an optimizer rule sit next to each other: each segment's update works
        # on contiguous slices (views) of the stacked parameters.
        order = sorted(active, key=lambda r: (repr(r.rule), r.index))
        self.active = order
        self.segments = []
        if not order:
            self.params = {}
            return
        if len({len(r.records) for r in order}) > 1:
            raise ConfigError("runs of one batched group must be at the same epoch")
        params, _buffers = stack_module_state([r.parts.model for r in order])  # type: ignore[arg-type]
        self.params = {name: p.detach() for name, p in params.items()}
        start = 0
        while start < len(order):
            stop = start
            while stop < len(order) and order[stop].rule == order[start].rule:
                stop += 1
            optimizers = [r.parts.optimizer for r in order[start:stop]]
            state = _state_from_optimizers(order[start].rule, optimizers)
            self.segments.append(_Segment(order[start].rule, start, stop, state))
            start = stop

    def _sync_parts(self) -> None:
        """Copy each active run's slice of the stack back into its engine parts."""
        with torch.no_grad():
            for segment in self.segments:
                for row in range(segment.start, segment.stop):
                    run = self.active[row]
                    for name, param in run.parts.model.named_parameters():
                        param.copy_(self.params[name][row])
                    _state_to_optimizer(
                        segment.rule, segment.state, row - segment.start, run.parts.optimizer
                    )

    def _retire(self, rows: list[int]) -> None:
        """Take runs out of the stack (finished or diverged); the others carry on."""
        self._sync_parts()
        keep = [r for i, r in enumerate(self.active) if i not in set(rows)]
        self._stack(keep)

    # ----------------------------------------------------------------- maths

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._base, params, (x,))

    def _loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._forward(params, x)
        return F.cross_entropy(out, y), out.detach()

    def _epoch_rates(self, run: _Run) -> list[float]:
        """The rate of each step of the coming epoch, as the run's AnnealingLR gives it."""
        sched = run.parts.scheduler
        start = sched.last_epoch
        scale = sched.scale[0]
        if run.config.step_per == "iteration":
            return [sched.rate_at(start + i) * scale for i in range(self.steps_per_epoch)]
        return [sched.rate_at(start) * scale] * self.steps_per_epoch

    @staticmethod
    def _advance_scheduler(run: _Run, steps: int) -> None:
        sched = run.parts.scheduler
        last = sched.last_epoch + steps
        sched.load_state_dict({**sched.state_dict(), "last_epoch": last, "_step_count": last + 1})

    # ----------------------------------------------------------------- training

    def train_epoch(self) -> list[tuple[_Run, float, float, float]]:
        """One pass over the training set for every active run.

        Returns (run, last lr, mean loss, accuracy %) for each run that trained this epoch.
        A run whose loss turns non-finite leaves the stack at that step (loss NaN, as the
        engine reports it) and the others continue.
        """
        data, spec, device = self.data, self.data.spec, self.device
        n = data.train_x.shape[0]
        runs = list(self.active)  # positions fixed for this epoch
        position = {id(r): pos for pos, r in enumerate(runs)}
        # Each run's own batch order, drawn exactly as the engine draws it.
        orders = torch.stack([torch.randperm(n, generator=r.parts.order_gen) for r in runs])
        orders = all_orders = orders.to(device, non_blocking=True)
        rates = [self._epoch_rates(r) for r in runs]
        # The same rates as float64 on the device: one copy per epoch, none per step.
        rate_table = torch.tensor(rates, dtype=torch.float64, device=device)
        rows = list(range(len(runs)))  # stack row -> position in ``runs``
        rows_t = torch.arange(len(runs), device=device)
        loss_sum = torch.zeros(len(runs), device=device, dtype=torch.float64)
        correct = torch.zeros(len(runs), device=device, dtype=torch.int64)
        results: dict[int, tuple[_Run, float, float, float]] = {}
        names = list(self.params)
        for step in range(self.steps_per_epoch):
            idx = orders[:, step * self.batch_size : (step + 1) * self.batch_size]
            k, b = idx.shape
            x = data.train_x.index_select(0, idx.reshape(-1)).view(k, b, *spec.input_shape)
            y = data.train_y.index_select(0, idx.reshape(-1)).view(k, b)
            if spec.crop or spec.flip:
                x = torch.stack(
                    [data_mod.augment(x[i], spec, runs[rows[i]].parts.aug_gen) for i in range(k)]
                )
            grads, (loss, logits) = self._loss_grad(self.params, x, y)
            step_rates = rate_table[:, step].index_select(0, rows_t)  # stack row order
            for segment in self.segments:
                part = slice(segment.start, segment.stop)
                batched_update(
                    segment.rule,
                    [self.params[name][part] for name in names],
                    [grads[name][part] for name in names],
                    segment.state,
                    step_rates[part],
                )
            loss = loss.detach()
            loss_sum.index_add_(0, rows_t, loss.double() * b)
            correct.index_add_(0, rows_t, (logits.argmax(-1) == y).sum(1))
            if self.check_each_step and not bool(torch.isfinite(loss).all()):
                bad = [i for i in range(k) if not math.isfinite(float(loss[i]))]
                for i in bad:
                    pos = rows[i]
                    accuracy = float(correct[pos]) * 100.0 / n
                    results[pos] = (runs[pos], rates[pos][step], float("nan"), accuracy)
                    if runs[pos].config.step_per == "iteration":
                        self._advance_scheduler(runs[pos], step + 1)
                    runs[pos].status = "diverged"
                self._retire(bad)
                if not self.active:
                    break
                rows = [position[id(r)] for r in self.active]
                rows_t = torch.tensor(rows, device=device)
                orders = all_orders.index_select(0, rows_t)
        for pos, run in enumerate(runs):
            if pos in results:
                continue
            steps = self.steps_per_epoch if run.config.step_per == "iteration" else 1
            self._advance_scheduler(run, steps)
            loss_mean = float(loss_sum[pos]) / n
            if not math.isfinite(loss_mean):
                run.status = "diverged"
            results[pos] = (run, rates[pos][-1], loss_mean, float(correct[pos]) * 100.0 / n)
        self._sync_parts()
        return [results[pos] for pos in sorted(results)]

    @torch.no_grad()
    def evaluate(self) -> list[tuple[float, float]]:
        """Mean test loss and accuracy (%) of each active run, in the stack's order."""
        data, device = self.data, self.device
        k, n = len(self.active), data.test_x.shape[0]
        loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
        correct = torch.zeros(k, device=device, dtype=torch.int64)
        for start in range(0, n, engine.EVAL_BATCH):
            x = data.test_x[start : start + engine.EVAL_BATCH]
            y = data.test_y[start : start + engine.EVAL_BATCH]
            out = self._logits(self.params, x)  # (k, b, classes)
            losses = F.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none")
            loss_sum += losses.view(k, -1).sum(1).double()
            correct += (out.argmax(-1) == y).sum(1)
        return [(float(loss_sum[i]) / n, float(correct[i]) * 100.0 / n) for i in range(k)]

    def pending(self) -> list[_Run]:
        return [r for r in self.runs if r.status == "running"]

    def _gather(self) -> None:
        """Stack the runs furthest behind (resumed runs may stand at different epochs)."""
        pending = self.pending()
        behind = min(len(r.records) for r in pending)
        wanted = [r for r in pending if len(r.records) == behind]
        if {id(r) for r in wanted} != {id(r) for r in self.active}:
            if self.active:
                self._sync_parts()
            self._stack(wanted)

    def run_epoch(self, on_epoch: Callable[[int, EpochRecord], None] | None = None) -> None:
        """Train and evaluate one epoch of the stacked runs; checkpoint, then report each."""
        self._gather()
        start = time.perf_counter()
        trained = self.train_epoch()
        stacked = {id(r): row for row, r in enumerate(self.active)}
        scores = self.evaluate() if self.active else []
        tests: dict[int, tuple[float, float]] = {}
        for run, *_ in trained:
            if id(run) in stacked:
                tests[id(run)] = scores[stacked[id(run)]]
            else:  # left the stack mid-epoch: its last weights are in its engine parts
                tests[id(run)] = engine._evaluate(run.config, run.parts, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        # Each run's share of the group's time, so the runs' times add up to the machine's.
        wall = (time.perf_counter() - start) / len(trained)
        finished: list[int] = []
        reports: list[tuple[_Run, EpochRecord]] = []
        for run, lr, train_loss, train_acc in trained:
            test_loss, test_acc = tests[id(run)]
            record = EpochRecord(
                epoch=len(run.records) + 1,
                lr=float(lr),
                train_loss=train_loss,
                train_acc=train_acc,
                test_loss=test_loss,
                test_acc=test_acc,
                wall_time=wall,
            )
            run.records.append(record)
            reports.append((run, record))
            if run.status == "running" and len(run.records) >= run.config.epochs:
                run.status = "done"
            if run.status != "running" and id(run) in stacked:
                finished.append(stacked[id(run)])
            if run.checkpoint is not None:
                status = "diverged" if run.status == "diverged" else "running"
                engine._save_atomic(
                    engine._state(run.config, run.parts, run.records, status), run.checkpoint
                )
        if finished:
            self._retire(finished)
        # Every checkpoint of the epoch is on disk before the first report.
        if on_epoch is not None:
            for run, record in sorted(reports, key=lambda item: item[0].index):
                on_epoch(run.index, record)

    def results(self) -> list[RunResult]:
        """Every run's result so far, in the caller's order."""
        return [
            RunResult(
                r.config,
                "diverged" if r.status == "diverged" else "done",
                list(r.records),
                DIVERGED if r.status == "diverged" else None,
            )
            for r in self.runs
        ]


def _path(path: str | Path | None) -> Path | None:
    return Path(path) if path is not None else None


def train_batched(
    configs: Sequence[RunConfig],
    *,
    data_root: str | Path | None = None,
    checkpoint_paths: Sequence[str | Path | None] | None = None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    progress: bool = False,
) -> list[RunResult]:
    """Train ``configs`` as one vectorized group; one :class:`RunResult` per config, in order.

    The runs must share dataset, model (without BatchNorm), batch size, subset and device
    (:func:`check_batchable`); they may differ in method, seed, epochs and ``step_per``.
    ``checkpoint_paths`` (one per run, or None) are engine checkpoints: written after every
    epoch, resumed from when present, interchangeable with :func:`annealbench.engine.train`.
    ``on_epoch(index, record)`` is called for run ``configs[index]`` after its checkpoint is
    on disk. A run whose loss turns non-finite stops with status "diverged"; the others go
    on. ``wall_time`` is the run's share of the group's epoch time.
    """
    group = BatchedGroup(configs, data_root=data_root, checkpoint_paths=checkpoint_paths)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        remaining = sum(r.config.epochs - len(r.records) for r in group.pending())
        bar = tqdm(total=remaining, desc=f"{len(configs)} runs batched", unit="run-epoch")
    try:
        while group.pending():
            before = sum(len(r.records) for r in group.runs)
            group.run_epoch(on_epoch)
            if bar is not None:
                bar.update(sum(len(r.records) for r in group.runs) - before)
    finally:
        if bar is not None:
            bar.close()
    return group.results()
