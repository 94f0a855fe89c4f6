"""Whether a built model can train in a batched group: the checks behind
:func:`annealbench.models.batch_problem`.

A group (``annealbench.training.batched``) stacks its runs' parameters and computes their
steps as one ``torch.func.vmap`` of ``grad_and_value`` over ``functional_call`` of a weightless
(meta) copy of the model. :func:`batch_problem` tries exactly that on a probe batch: two
stacked copies of the parameters, two zero inputs each, a cross-entropy loss; and evaluation's
form (the runs share one batch). BatchNorm and other buffers are refused without trying: a
group does not stack them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from annealbench.errors import ConfigError
from annealbench.models.loading import describe_error

__all__ = ["RUNS", "SAMPLES", "batch_problem", "check_outputs"]

RUNS = 2  # stacked copies of the parameters
SAMPLES = 2  # the probe batch
MAX_LISTED = 3


def check_outputs(label: str, net: nn.Module, shape: Sequence[int], num_classes: int) -> None:
    """ConfigError unless ``net`` maps a batch of zeros to (batch, num_classes) float logits."""
    x = torch.zeros(SAMPLES, *shape)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as exc:
        raise ConfigError(
            f"model {label!r} fails on a batch of {SAMPLES} zero inputs of shape "
            f"{tuple(shape)}: {describe_error(exc)}"
        ) from exc
    expected = (SAMPLES, num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model {label!r} gives {got} for a batch of {SAMPLES} inputs; expected logits of "
            f"shape (batch, num_classes) = {expected}"
        )
    if not out.is_floating_point():
        raise ConfigError(f"model {label!r} gives {out.dtype} outputs; expected float logits")


def _vmapped_steps(net: nn.Module, shape: Sequence[int], num_classes: int) -> None:
    """A training step and an evaluation pass of ``RUNS`` stacked copies, as a group runs them."""
    params, _ = stack_module_state([net] * RUNS)  # type: ignore[arg-type]
    params = {name: p.detach() for name, p in params.items()}
    base = copy.deepcopy(net).to("meta")

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (x,))

    def loss(
        p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = forward(p, x)
        return F.cross_entropy(out, y), out.detach()

    x = torch.zeros(RUNS, SAMPLES, *shape)
    y = torch.zeros(RUNS, SAMPLES, dtype=torch.long)
    grads, (_, logits) = vmap(grad_and_value(loss, has_aux=True))(params, x, y)
    if set(grads) != set(params) or tuple(logits.shape) != (RUNS, SAMPLES, num_classes):
        raise RuntimeError("the vmapped step did not give one gradient per parameter")
    evaluated = vmap(forward, in_dims=(0, None))(params, x[0])
    if tuple(evaluated.shape) != (RUNS, SAMPLES, num_classes):
        raise RuntimeError(f"vmapped evaluation gave shape {tuple(evaluated.shape)}")


def batch_problem(label: str, net: nn.Module, shape: Sequence[int], num_classes: int) -> str | None:
    """None when ``net`` trains in a batched group; else why not, in one line naming ``label``.

    ConfigError (not a reason) when the model's own forward pass fails or gives outputs of the
    wrong shape: those fail alone too. Draws from torch's global RNG: fork it around the call.
    """
    net.train()
    check_outputs(label, net, shape, num_classes)
    norms = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        return f"{label} has BatchNorm (running statistics are not vmapped)"
    buffers = [name for name, _ in net.named_buffers()]
    if buffers:
        listed = ", ".join(buffers[:MAX_LISTED]) + (", …" if len(buffers) > MAX_LISTED else "")
        return f"{label} has buffers ({listed}), which batched training does not stack"
    try:
        _vmapped_steps(net, shape, num_classes)
    except Exception as exc:
        return f"{label} cannot be vmapped: {describe_error(exc)}"
    return None
