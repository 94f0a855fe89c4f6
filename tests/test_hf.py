"""AnnealingLR in a Hugging Face ``Trainer`` and an Accelerate loop: the rates of each
optimizer update with gradient accumulation, as applied and as logged, and the docs snippet
runs as written.

The Trainer steps the scheduler once per optimizer update (after the last micro-batch of an
accumulation), so ``total_steps`` is the number of updates. Since transformers 4.51 (PR
#36973) it logs the rate read after ``optimizer.step()`` and before ``scheduler.step()``:
the rate the logged update was made with. Before, it read it after ``scheduler.step()``,
one update ahead; the test expects whichever the installed version does. CPU only, no
download: the model is a small torch module returning ``{"loss": ..., "logits": ...}``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import accelerate  # noqa: F401  (the Trainer needs it: installed by make install, [hf])
import pytest
import torch
import transformers
from packaging.version import Version

from annealbench import AnnealingLR, schedules
from conftest import readme_block

SNIPPET = "### With Hugging Face Transformers"  # the README section
#: transformers logs the rate an update was made with from this version on.
LOGS_RATE_USED = Version(transformers.__version__) >= Version("4.51")


class TinyRegressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(torch.relu(self.backbone(x))).squeeze(-1)
        return {"loss": torch.nn.functional.mse_loss(logits, labels), "logits": logits}


def python_block(path: Path) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"{path.name}: one python block expected"
    return blocks[0]


def test_trainer_with_accumulation_anneals_per_optimizer_update(tmp_path: Path) -> None:
    torch.manual_seed(0)
    samples, batch, accumulation, epochs = 24, 2, 2, 2  # 12 batches, 6 updates an epoch
    data = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(samples)]
    total = samples // batch // accumulation * epochs
    model = TinyRegressor()
    optimizer = torch.optim.AdamW(
        [
            {"params": model.backbone.parameters(), "lr": 1e-4},
            {"params": model.head.parameters(), "lr": 1e-3},
        ]
    )
    sig_plus, cosine = schedules.get("sig+"), schedules.get("cosine")
    scheduler = AnnealingLR(optimizer, [sig_plus, cosine], total_steps=total)
    used: list[list[float]] = []  # each update's rates, as the optimizer had them
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append([g["lr"] for g in opt.param_groups])
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(
        model, args, train_dataset=data, optimizers=(optimizer, scheduler)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "AnnealingLR" in str(w.message)]

    # Each update k (0-based) ran at the schedules' rate at k / total, exactly.
    want = [
        [sig_plus(k / total) * (1e-4 / sig_plus.peak), cosine(k / total) * (1e-3 / cosine.peak)]
        for k in range(total)
    ]
    assert used == want
    assert (scheduler.updates, scheduler.last_epoch, trainer.state.global_step) == (total,) * 3

    logged = [
        (log["step"], log["learning_rate"])
        for log in trainer.state.log_history
        if "learning_rate" in log
    ]
    assert [step for step, _ in logged] == list(range(1, total + 1))
    # The log of global step s (s updates made) shows group 0's rate: the rate update s was
    # made with (transformers >= 4.51), or the one update s + 1 will be made with (before).
    ahead = 0 if LOGS_RATE_USED else 1
    assert [rate for _, rate in logged] == [
        sig_plus(min(s - 1 + ahead, total) / total) * (1e-4 / sig_plus.peak) for s, _ in logged
    ]


def test_an_accelerate_loop_with_accumulation_anneals_per_optimizer_update() -> None:
    """Accelerate's prepared scheduler is stepped on every micro-batch and passes the call
    on only at an update: the same rates, no warning."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    total = len(loader) // 2  # one epoch: 8 updates
    scheduler = AnnealingLR(optimizer, "linear", total_steps=total)
    used: list[float] = []
    optimizer.register_step_pre_hook(lambda o, a, k: used.append(o.param_groups[0]["lr"]))
    model, optimizer, loader, prepared = accelerator.prepare(model, optimizer, loader, scheduler)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="AnnealingLR")
        for x, y in loader:
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(x).squeeze(-1), y))
                optimizer.step()
                prepared.step()
                optimizer.zero_grad()
    linear = schedules.get("linear")
    assert used == [linear(k / total) for k in range(total)]
    assert (scheduler.updates, scheduler.last_epoch) == (total, total)


def test_the_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(readme_block(SNIPPET), "README.md", "exec"), namespace)
    scheduler, rates = namespace["scheduler"], namespace["rates"]
    assert scheduler.total_steps == 8 and scheduler.updates == 8 == scheduler.last_epoch
    cosine_plus = schedules.get("cosine+")
    if LOGS_RATE_USED:
        assert rates == [cosine_plus(k / 8) * (1e-3 / cosine_plus.peak) for k in range(8)]
