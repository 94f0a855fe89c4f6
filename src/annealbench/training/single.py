"""The stepper of one run: its own module and torch optimizer (fused where torch has it)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from annealbench.errors import ConfigError
from annealbench.training.config import RunConfig
from annealbench.training.parts import run_optimizer

__all__ = ["EVAL_BATCH", "SingleStepper"]

#: Test images per evaluation batch.
EVAL_BATCH = 1000


class SingleStepper:
    """One optimizer update per batch for one run (the loop passes batches as ``(1, b, ...)``).

    The only stepper that takes ``channels_last``, ``bf16`` and ``compile``.
    """

    def __init__(self, config: RunConfig, model: torch.nn.Module, device: torch.device) -> None:
        self.config = config
        self.model = model
        self.device = device
        method = config.method_spec()
        # Schedule-free optimizers keep a train point (where gradients are taken) and an eval
        # point (the average that is evaluated and saved); BatchNorm's running statistics
        # would belong to the train point, so they are refused rather than silently wrong.
        self.schedule_free = method.schedule_free
        if self.schedule_free and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ):
            raise ConfigError(
                f"{config.method} is schedule-free, and {config.model} has BatchNorm, whose "
                "statistics would have to be recomputed at the averaged weights before every "
                "evaluation; annealbench does not do that yet: use a model without BatchNorm"
            )
        self.optimizer = run_optimizer(config, list(model.parameters()))
        self.forward: Any = torch.compile(model) if config.compile else model
        self.rates: list[float] = []

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def begin_epoch(self, rates: list[list[float]]) -> None:
        """This epoch's rate of every update, one list per active run."""
        (self.rates,) = rates
        self.model.train()
        if self.schedule_free:
            self.optimizer.train()  # parameters to the train point

    def step(self, index: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Update ``index`` of the epoch on batch ``x[0], y[0]``: (loss (1,), logits (1, b, C))."""
        x, y = self._input(x[0]), y[0]
        with self._autocast():
            out = self.forward(x)
            loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.optimizer.param_groups:
            group["lr"] = self.rates[index]
        self.optimizer.step()
        return loss.detach().unsqueeze(0), out.detach().unsqueeze(0)

    @torch.no_grad()
    def evaluate(
        self, x_all: torch.Tensor, y_all: torch.Tensor, rows: list[int] | None = None
    ) -> list[tuple[float, float]]:
        """Mean loss and accuracy (%) on ``x_all, y_all``."""
        self.model.eval()
        if self.schedule_free:
            self.optimizer.eval()  # parameters to the averaged point (until the next epoch)
        n = x_all.shape[0]
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for start in range(0, n, EVAL_BATCH):
            x = self._input(x_all[start : start + EVAL_BATCH])
            y = y_all[start : start + EVAL_BATCH]
            with self._autocast():
                out = self.forward(x)
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            correct += (out.argmax(1) == y).sum()
        return [(float(loss_sum) / n, float(correct) * 100.0 / n)]

    def retire(self, rows: list[int]) -> None:
        """Nothing to take apart: a single run stops with the loop."""

    def state(self, row: int) -> dict[str, Any]:
        if self.schedule_free:  # saved at the eval point, as schedulefree asks
            self.optimizer.eval()
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, row: int, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
