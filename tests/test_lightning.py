"""AnnealingLR in Lightning: the rate of each optimizer update with gradient accumulation,
an exact resume from a checkpoint saved midway, and the docs snippet runs as written.

Lightning steps a scheduler with ``"interval": "step"`` after each optimizer update, not per
accumulated batch, so ``total_steps`` is the number of updates; the rates are read from the
optimizer in ``on_before_optimizer_step``, just before each update is made with them.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import lightning  # installed by make install ([lightning]): a missing one fails, never skips
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from annealbench import AnnealingLR, schedules
from conftest import readme_block

SNIPPET = "### With Lightning"  # the README section
SAMPLES, BATCH, ACCUMULATION, EPOCHS = 20, 2, 2, 4  # 10 batches: 5 updates an epoch
TOTAL = SAMPLES // BATCH // ACCUMULATION * EPOCHS
LRS = (0.1, 0.02)
SCHEDULES = (schedules.get("sig+"), schedules.get("cosine"))


class Regressor(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)
        self.used: list[list[float]] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.head(torch.relu(self.backbone(x))).squeeze(-1), y)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.used.append([group["lr"] for group in optimizer.param_groups])

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(
            [
                {"params": self.backbone.parameters(), "lr": LRS[0]},
                {"params": self.head.parameters(), "lr": LRS[1]},
            ],
            momentum=0.9,
        )
        scheduler = AnnealingLR(optimizer, list(SCHEDULES), total_steps=TOTAL)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(SAMPLES, 4, generator=generator), torch.randn(SAMPLES))
    return DataLoader(data, batch_size=BATCH)


def fit(module: Regressor, root: Path, *, callbacks: list | None = None, **kwargs) -> Regressor:
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUMULATION,
        logger=False,
        enable_checkpointing=bool(callbacks),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, loader(), **kwargs)
    assert not [w for w in caught if "AnnealingLR" in str(w.message)]
    return module


def python_block(path: Path) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"{path.name}: one python block expected"
    return blocks[0]


@pytest.mark.parametrize(
    "every,checkpoint,made",
    [
        ({"every_n_epochs": 1}, "epoch=1.ckpt", 10),  # the second epoch's end
        ({"every_n_train_steps": 7}, "step=7.ckpt", 7),  # mid-epoch, 2 updates into the second
    ],
    ids=["epoch-end", "mid-epoch"],
)
def test_rates_per_update_with_accumulation_and_an_exact_resume(
    tmp_path: Path, every: dict, checkpoint: str, made: int
) -> None:
    checkpoints = lightning.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", filename="{epoch}" if "every_n_epochs" in every else "{step}",
        save_top_k=-1, **every,
    )  # fmt: skip
    whole = fit(Regressor(), tmp_path, callbacks=[checkpoints]).used
    # Update k (0-based) is made at each group's schedule at k / TOTAL, exactly.
    assert whole == [
        [s(k / TOTAL) * (lr / s.peak) for s, lr in zip(SCHEDULES, LRS, strict=True)]
        for k in range(TOTAL)
    ]
    # Resumed from a checkpoint saved after `made` updates: the uninterrupted run's rest.
    midway = tmp_path / "ckpt" / checkpoint
    resumed = fit(Regressor(), tmp_path / "resumed", ckpt_path=str(midway)).used
    assert resumed == whole[made:]


def test_the_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(readme_block(SNIPPET), "README.md", "exec"), namespace)
    scheduler = namespace["trainer"].lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, AnnealingLR)
    assert scheduler.total_steps == 12 == scheduler.updates == scheduler.last_epoch
