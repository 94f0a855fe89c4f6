"""The stepper of a group: K runs of one model and dataset as one stack of parameters.

The runs of one row of the paper's grid (12 methods x 10 seeds) share the architecture and
the data, so their forward and backward passes can be one vectorized computation
(``torch.func``: ``stack_module_state``, ``functional_call``, ``vmap`` of ``grad``). The
loop gives each run its own batches, augmentation and rates; the group keeps each run's
weights and optimizer state as one row of stacked tensors, and its updates are
torch.optim's single-tensor formulas (SGD with momentum and weight decay, RMSprop, Adam,
AdamW) written on stacked tensors. A run's state is written in torch's own ``state_dict``
formats, so a run may continue alone from a checkpoint written in a group and the other
way round. Results equal separate runs up to float rounding (batched matmuls round
differently).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from annealbench import models as models_mod
from annealbench.errors import ConfigError
from annealbench.training.config import RunConfig
from annealbench.training.parts import decayed_first, resolve_device, run_optimizer
from annealbench.training.single import EVAL_BATCH

__all__ = [
    "CPU_BATCH_MODELS",
    "MIN_RUNS_CPU",
    "GroupStepper",
    "OptimizerRule",
    "batched_update",
    "check_batchable",
    "model_problem",
    "optimizer_rule",
    "should_batch",
]

#: On the CPU a group wins only from this many runs on (measured: benchmarks/README.md).
MIN_RUNS_CPU = 4
#: Models a group trains faster than one run at a time on the CPU (measured:
#: benchmarks/README.md). nn3's larger matmuls already run well alone (a group measured
#: 0.84-0.97x); the convolutional models' vmapped convolutions become grouped convolutions,
#: whose CPU backward is slow (lenet4 0.75-0.97x, vgg9 0.94x).
CPU_BATCH_MODELS = frozenset({"nn2"})
#: User models at most this many forward FLOPs per sample (nn2's 0.53 M on 28x28 inputs)
#: are grouped on the CPU too, when they qualify.
CPU_BATCH_MAX_FLOPS = 0.6e6


# --------------------------------------------------------------------------- optimizer rules


@dataclass(frozen=True)
class OptimizerRule:
    """An optimizer kind and its settings apart from the rate: runs sharing one update together."""

    kind: str  # "sgd", "rmsprop", "adam" or "adamw"
    settings: tuple[tuple[str, Any], ...]

    def get(self, name: str) -> Any:
        return dict(self.settings)[name]

    @property
    def state_names(self) -> tuple[str, ...]:
        """The per-parameter buffers torch.optim keeps for this kind."""
        return _STATE_NAMES[self.kind]


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
_STATE_NAMES = {
    "sgd": ("momentum_buffer",),
    "rmsprop": ("square_avg",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
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


@functools.lru_cache(maxsize=256)
def _rule_of_method(method_json: str) -> OptimizerRule:
    from annealbench.methods import Method

    probe = torch.zeros(1, requires_grad=True)
    return optimizer_rule(Method.from_config(json.loads(method_json)).make_optimizer([probe]))


def method_rule(config: RunConfig) -> OptimizerRule:
    """The rule of a run's method: torch's own defaults filled in by a one-element probe."""
    return _rule_of_method(json.dumps(config.method_spec().to_config(), sort_keys=True))


# --------------------------------------------------------------------------- the choice


def check_batchable(configs: Sequence[RunConfig]) -> None:
    """Raise :class:`ConfigError` saying why ``configs`` cannot train as one group."""
    if not configs:
        raise ConfigError("a batched group needs at least one run")
    for config in configs:
        config.validate()
    first = configs[0]
    problems: list[str] = []
    for name in (
        "dataset", "model", "batch_size", "subset", "validation", "input_scaling",
        "weight_decay_on",
    ):  # fmt: skip
        values = sorted({repr(getattr(c, name)) for c in configs})
        if len(values) > 1:
            problems.append(f"runs differ in {name} ({', '.join(values)})")
    devices = sorted({str(resolve_device(c.device)) for c in configs})
    if len(devices) > 1:
        problems.append(f"runs are on different devices ({', '.join(devices)})")
    problem = model_problem(first)
    if problem is not None:
        problems.append(problem)
    for name in ("bf16", "compile", "channels_last"):
        if any(getattr(c, name) for c in configs):
            problems.append(f"{name} is not supported by batched training")
    for config in configs:
        try:
            method_rule(config)
        except ConfigError as exc:
            problems.append(f"{config.label()}: {exc}")
    if problems:
        raise ConfigError("these runs cannot train as one batched group: " + "; ".join(problems))


def model_problem(config: RunConfig) -> str | None:
    """Why the run's model cannot train in a vmapped group (BatchNorm, buffers, operations
    vmap refuses), or None when it can (:func:`annealbench.models.batch_problem`)."""
    dataset = config.dataset_spec()
    return models_mod.batch_problem(config.model, dataset.input_shape, dataset.num_classes)


def small_user_model(config: RunConfig) -> bool:
    """A user model no larger than nn2 per sample (forward FLOPs): the size at which a group
    was measured faster than one run at a time on the CPU."""
    if models_mod.spec(config.model).origin == "builtin":
        return False
    dataset = config.dataset_spec()
    return _forward_flops(config.model, dataset.input_shape, dataset.num_classes) <= (
        CPU_BATCH_MAX_FLOPS
    )


@functools.lru_cache(maxsize=64)
def _forward_flops(model: str, shape: tuple[int, ...], classes: int) -> float:
    return models_mod.count_flops(model, shape, classes).forward


def should_batch(configs: Sequence[RunConfig], device: str | torch.device | None = None) -> bool:
    """Whether training ``configs`` as one group beats training them one after another.

    Never for runs that cannot be grouped (:func:`check_batchable`). On the CPU: only
    :data:`CPU_BATCH_MODELS` (nn2), and user models as small (:func:`small_user_model`),
    with at least :data:`MIN_RUNS_CPU` runs, the only case
    measured faster on this project's 2-core CPU (1.15-1.85x); elsewhere a group measured
    slower or within noise, so one at a time is kept. On a GPU: from two runs on, since one
    shallow model at batch 128 leaves the chip mostly idle (an expectation: the GPU
    figures are still to be measured, benchmarks/README.md).
    """
    try:
        check_batchable(configs)
    except ConfigError:
        return False
    dev = resolve_device(str(device) if device is not None else configs[0].device)
    if len(configs) < 2:
        return False
    if dev.type == "cpu":
        first = configs[0]
        small = first.model in CPU_BATCH_MODELS or small_user_model(first)
        return small and len(configs) >= MIN_RUNS_CPU
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
    decayed: int | None = None,
) -> None:
    """One optimizer step on stacked (k, ...) tensors, run i at rate ``lrs[i]``, in place.

    torch.optim's single-tensor formulas: weight decay added to the gradient (decoupled for
    AdamW); SGD ``b = mu*b + g`` (first step ``b = g``), ``p -= lr*b``; RMSprop
    ``s = alpha*s + (1-alpha)*g^2``, ``p -= lr*g/(sqrt(s)+eps)``; Adam with bias correction.
    ``state`` holds ``step`` (an int, shared by the k runs) and the stacked buffers;
    ``lrs`` is a float64 tensor on the parameters' device (or a list of floats).
    ``grads`` are consumed: weight decay is added to them in place. Only the first
    ``decayed`` tensors (all when None) are decayed (``weight_decay_on="weights"``).
    """
    if not isinstance(lrs, torch.Tensor):
        lrs = torch.tensor(list(lrs), dtype=torch.float64, device=params[0].device)
    with torch.no_grad():
        step = int(state.get("step", 0)) + 1
        state["step"] = step
        wd = float(rule.get("weight_decay"))
        n = len(params) if decayed is None else decayed
        if wd != 0 and rule.kind != "adamw" and n:
            torch._foreach_add_(grads[:n], params[:n], alpha=wd)  # torch: grad.add(param, alpha=wd)
        if rule.kind == "sgd":
            _sgd(rule, params, grads, state, lrs)
        elif rule.kind == "rmsprop":
            alpha, eps = float(rule.get("alpha")), float(rule.get("eps"))
            squares = state.setdefault("square_avg", [torch.zeros_like(p) for p in params])
            torch._foreach_mul_(squares, alpha)
            torch._foreach_addcmul_(squares, grads, grads, value=1 - alpha)
            avg = torch._foreach_sqrt(squares)
            torch._foreach_add_(avg, eps)
            torch._foreach_addcmul_(params, torch._foreach_div(grads, avg), _per_run(-lrs, params))
        else:
            _adam(rule, params, grads, state, lrs, step, wd, n)


def _sgd(rule: OptimizerRule, params: list, grads: list, state: dict, lrs: torch.Tensor) -> None:
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


def _adam(
    rule: OptimizerRule, params: list, grads: list, state: dict, lrs: torch.Tensor, step: int,
    wd: float, decayed: int,
) -> None:  # fmt: skip
    beta1, beta2 = (float(b) for b in rule.get("betas"))
    eps = float(rule.get("eps"))
    if rule.kind == "adamw" and wd != 0 and decayed:
        kept = params[:decayed]
        torch._foreach_mul_(kept, _per_run(1 - lrs * wd, kept))  # param.mul_(1 - lr * wd)
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


# --------------------------------------------------------------------------- the stepper


@dataclass
class _Segment:
    """Consecutive rows of the stack that share one optimizer rule (and so one update)."""

    rule: OptimizerRule
    start: int
    stop: int
    state: dict[str, Any]


class GroupStepper:
    """One optimizer update per batch for K stacked runs; row ``i`` is run ``order[i]``.

    Runs sharing an optimizer rule sit next to each other (``order``), so each rule's
    update works on contiguous slices (views) of the stacked parameters. All runs of a
    group stand at the same update count: the loop groups them so.
    """

    def __init__(
        self, configs: Sequence[RunConfig], models: Sequence[torch.nn.Module], device: torch.device
    ) -> None:
        check_batchable(configs)
        rules = [method_rule(c) for c in configs]
        self.order = sorted(range(len(configs)), key=lambda i: (repr(rules[i]), i))
        self.device = device
        self.rules = [rules[i] for i in self.order]
        # torch's param_groups of each run's optimizer: the settings a checkpoint records.
        self._groups = [
            run_optimizer(configs[i], list(models[i].parameters())).state_dict()["param_groups"]
            for i in self.order
        ]
        params, _buffers = stack_module_state([models[i] for i in self.order])  # type: ignore[arg-type]
        # The parameters in the order of each run's torch optimizer (decayed ones first),
        # so every update and every saved state entry lines up with torch's own.
        order, self._decayed = decayed_first(configs[0], list(models[0].parameters()))
        names = list(params)
        self.names = [names[i] for i in order]
        self.params = {name: params[name].detach() for name in self.names}
        self._base = copy.deepcopy(models[0]).to("meta")  # the architecture, no weights
        self._loss_grad = vmap(grad_and_value(self._loss, has_aux=True))
        self._logits = vmap(self._forward, in_dims=(0, None))
        self.rates = torch.zeros(0)
        self.segments: list[_Segment] = []
        for row, rule in enumerate(self.rules):
            if self.segments and self.segments[-1].rule == rule:
                self.segments[-1].stop = row + 1
            else:
                self.segments.append(_Segment(rule, row, row + 1, {"step": 0}))

    def _forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._base, params, (x,))

    def _loss(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._forward(params, x)
        return F.cross_entropy(out, y), out.detach()

    def begin_epoch(self, rates: list[list[float]]) -> None:
        """This epoch's rates, one list per row: one float64 copy on the device per epoch."""
        self.rates = torch.tensor(rates, dtype=torch.float64, device=self.device)

    def step(self, index: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Update ``index`` of the epoch, row i on batch ``x[i], y[i]``: (losses, logits)."""
        grads, (loss, logits) = self._loss_grad(self.params, x, y)
        step_rates = self.rates[:, index]
        for segment in self.segments:
            part = slice(segment.start, segment.stop)
            batched_update(
                segment.rule,
                [self.params[name][part] for name in self.names],
                [grads[name][part] for name in self.names],
                segment.state,
                step_rates[part],
                self._decayed,
            )
        return loss.detach(), logits

    @torch.no_grad()
    def evaluate(
        self, x_all: torch.Tensor, y_all: torch.Tensor, rows: list[int] | None = None
    ) -> list[tuple[float, float]]:
        """Mean loss and accuracy (%) of each row (all, or ``rows``) on ``x_all, y_all``."""
        params = self.params
        if rows is not None:
            index = torch.tensor(rows, device=self.device)
            params = {name: p.index_select(0, index) for name, p in params.items()}
        k, n = next(iter(params.values())).shape[0], x_all.shape[0]
        loss_sum = torch.zeros(k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(k, device=self.device, dtype=torch.int64)
        for start in range(0, n, EVAL_BATCH):
            x = x_all[start : start + EVAL_BATCH]
            y = y_all[start : start + EVAL_BATCH]
            out = self._logits(params, x)  # (k, b, classes)
            losses = F.cross_entropy(out.flatten(0, 1), y.repeat(k), reduction="none")
            loss_sum += losses.view(k, -1).sum(1).double()
            correct += (out.argmax(-1) == y).sum(1)
        return [(float(loss_sum[i]) / n, float(correct[i]) * 100.0 / n) for i in range(k)]

    def retire(self, rows: list[int]) -> None:
        """Take rows out of the stack (finished or diverged runs); the others carry on."""
        gone = set(rows)
        keep = [r for r in range(len(self.rules)) if r not in gone]
        index = torch.tensor(keep, device=self.device, dtype=torch.long)
        self.params = {name: p.index_select(0, index) for name, p in self.params.items()}
        if self.rates.numel():
            self.rates = self.rates.index_select(0, index)
        segments, start = [], 0
        for segment in self.segments:  # rules differ between segments: none merge
            kept = [r - segment.start for r in range(segment.start, segment.stop) if r in keep]
            if not kept:
                continue
            at = torch.tensor(kept, device=self.device, dtype=torch.long)
            state: dict[str, Any] = {"step": segment.state.get("step", 0)}
            for name in segment.rule.state_names:
                if name in segment.state:
                    state[name] = [b.index_select(0, at) for b in segment.state[name]]
            segments.append(_Segment(segment.rule, start, start + len(kept), state))
            start += len(kept)
        self.segments = segments
        self.rules = [self.rules[r] for r in keep]
        self._groups = [self._groups[r] for r in keep]

    def _segment_of(self, row: int) -> _Segment:
        return next(s for s in self.segments if s.start <= row < s.stop)

    def state(self, row: int) -> dict[str, Any]:
        """Row ``row``'s model and optimizer state, in torch's own ``state_dict`` formats."""
        segment = self._segment_of(row)
        at = row - segment.start
        model = {name: self.params[name][row].clone() for name in self.names}
        entries: dict[int, dict[str, Any]] = {}
        if segment.state.get("step", 0):
            for i in range(len(self.names)):
                entry = {
                    name: segment.state[name][i][at].clone()
                    for name in segment.rule.state_names
                    if name in segment.state
                }
                if segment.rule.kind != "sgd":
                    entry["step"] = torch.tensor(float(segment.state["step"]))
                entries[i] = entry
        optimizer = {"state": entries, "param_groups": copy.deepcopy(self._groups[row])}
        return {"model": model, "optimizer": optimizer}

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Put a run's saved model and optimizer state into row ``row``."""
        segment = self._segment_of(row)
        at = row - segment.start
        with torch.no_grad():
            for name in self.names:
                self.params[name][row].copy_(state["model"][name])
        saved = state["optimizer"]["state"]
        if not saved:
            return
        for name in segment.rule.state_names:
            stacked = segment.state.setdefault(
                name, [torch.zeros_like(self.params[n][segment.start : segment.stop])
                       for n in self.names],
            )  # fmt: skip
            for i in range(len(self.names)):
                if saved[i].get(name) is not None:
                    stacked[i][at].copy_(saved[i][name])
        # torch's SGD keeps no step count; a saved momentum buffer means it has stepped.
        step = 1 if segment.rule.kind == "sgd" else int(float(saved[0]["step"]))
        segment.state["step"] = step
