"""Training throughput, measured side by side in one process.

Four figures, each the best of ``repeats`` interleaved rounds (the machine may be shared;
interleaving exposes every figure to the same load, and the best of several is the one
least disturbed by it):

- **engine**: one run, exactly the training loop's epochs (``Trainer.train_epoch``): data
  on the device, one ``randperm`` per epoch, closed-form rates, fused optimizer;
- **batched**: K runs of the same model trained as one group (the same loop with
  :class:`~annealbench.training.batched.GroupStepper`),
  samples counted over all K runs;
- **reference**: the loop written the common way: a torchvision dataset with
  ``ToTensor`` and ``Normalize`` (plus the dataset's random crop/flip), a shuffling
  ``DataLoader`` (batch 128, ``num_workers=0``), ``torch.optim.SGD`` with momentum 0.9,
  ``loss.item()`` each step for the running loss, as the PyTorch tutorials do;
- **peak**: the dense fp32 matmul rate (``torch.mm`` of square matrices), GFLOP/s.

GFLOP/s of a loop = samples/s x FLOPs per sample, where FLOPs per sample is 3x the forward
FLOPs (the usual forward + backward convention), counted by ``FlopCounterMode``. The FLOPs
autograd actually executes are counted too (``executed_flops_per_sample``): less than 3x
when the first layer's input gradient is not needed (nn2: 2.1x).
Only training steps are timed (no evaluation), all on the same device and thread count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from annealbench import data as data_mod
from annealbench import methods as methods_mod
from annealbench import models as models_mod
from annealbench.training import loop as training
from annealbench.training.config import DEFAULT_BATCH_SIZE, RunConfig
from annealbench.training.parts import resolve_device

__all__ = [
    "FlopCount",
    "count_flops",
    "matmul_peak_gflops",
    "engine_throughput",
    "batched_throughput",
    "reference_throughput",
    "batched_configs",
    "run_benchmark",
    "REQUIRED_KEYS",
]

#: Keys ``annealbench bench --json`` always prints.
REQUIRED_KEYS = (
    "engine_samples_per_s",
    "reference_samples_per_s",
    "speedup",
    "engine_gflops",
    "peak_gflops",
    "fraction_of_peak",
    "batched_samples_per_s",
    "batched_k",
)

REFERENCE_LR = 0.1  # the paper's lr_up; the rate does not change the speed
WARMUP_STEPS = 5


#: FLOPs per sample (forward, backward), defined next to the counter in annealbench.models.
FlopCount = models_mod.FlopCount


def count_flops(model: str, dataset: str) -> FlopCount:
    """Forward and backward FLOPs per sample of ``model`` on ``dataset``'s input shape, counted
    by :func:`annealbench.models.count_flops` (matmuls, convs)."""
    spec = data_mod.spec(dataset)
    return models_mod.count_flops(model, spec.input_shape, spec.num_classes)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, size: int | None = None) -> float:
    """Best fp32 ``torch.mm`` rate of two square matrices (GFLOP/s), via torch.utils.benchmark."""
    # torch.utils.benchmark imports cpp_extension, which warns on machines without CUDA.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up (library init, allocation)
    timer = benchmark.Timer(
        stmt="torch.mm(a, b)",
        globals={"torch": torch, "a": a, "b": b},
        num_threads=torch.get_num_threads(),
    )
    measurement = timer.blocked_autorange(min_run_time=1.0)
    return 2 * n**3 / min(measurement.times) / 1e9


def _one_epoch_config(config: RunConfig, steps: int) -> tuple[RunConfig, int]:
    """The config whose epochs hold ``steps`` steps (a subset when fewer than an epoch), and
    how many epochs give at least that many steps."""
    train_size = data_mod.spec(config.dataset).train_size
    per_epoch = min(steps * config.batch_size, train_size)
    epochs = math.ceil(steps * config.batch_size / per_epoch)
    subset = per_epoch if per_epoch < train_size else None
    return dataclasses.replace(config, subset=subset, epochs=epochs), epochs


def _throughput(configs: list[RunConfig], steps: int, data_root: str | Path | None) -> float:
    """Training samples/s of the loop's own epochs (no evaluation), counted over all runs."""
    batched = len(configs) > 1
    warm = [_one_epoch_config(c, WARMUP_STEPS)[0] for c in configs]
    training.start(warm, batched=batched, data_root=data_root).train_epoch()
    timed = [_one_epoch_config(c, steps) for c in configs]
    epochs = timed[0][1]
    trainer = training.start([c for c, _ in timed], batched=batched, data_root=data_root)
    samples = len(configs) * epochs * trainer.data.train_x.shape[0]
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(epochs):
        trainer.train_epoch()
    _sync(trainer.device)
    return samples / (time.perf_counter() - start)


def engine_throughput(
    config: RunConfig, steps: int, *, data_root: str | Path | None = None
) -> float:
    """Training samples/s of one run through the training loop (no evaluation)."""
    return _throughput([config], steps, data_root)


def batched_configs(config: RunConfig, k: int) -> list[RunConfig]:
    """K runs like ``config``: the paper's 12 methods in turn, then the next seed."""
    methods = methods_mod.PAPER_METHODS
    return [
        dataclasses.replace(config, method=methods[i % len(methods)], seed=i // len(methods))
        for i in range(k)
    ]


def batched_throughput(
    configs: list[RunConfig], steps: int, *, data_root: str | Path | None = None
) -> float:
    """Training samples/s of K runs trained as one group, counted over all K runs."""
    return _throughput(configs, steps, data_root)


def _torchvision_dataset(spec: data_mod.TorchvisionDataset, root: Path) -> Any:
    """The training set through torchvision with the usual per-sample transforms."""
    from torchvision import transforms

    steps: list[Callable[..., Any]] = []
    if spec.crop:
        steps.append(transforms.RandomCrop(spec.input_shape[1], padding=data_mod.CROP_PADDING))
    if spec.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    return spec.torchvision_dataset(root, train=True, transform=transforms.Compose(steps))


def reference_throughput(
    model: str,
    dataset: str,
    steps: int,
    *,
    device: torch.device,
    data_root: str | Path | None = None,
) -> float:
    """Training samples/s of the common PyTorch loop (DataLoader, per-sample transforms)."""
    from torch.utils.data import DataLoader

    data_mod.load(dataset, root=data_root)  # puts the files where torchvision looks
    root = Path(data_root).expanduser() if data_root is not None else data_mod.default_root()
    spec = data_mod.spec(dataset)
    loader = DataLoader(
        _torchvision_dataset(spec, root), batch_size=DEFAULT_BATCH_SIZE, shuffle=True, num_workers=0
    )
    net = models_mod.build(model, spec.input_shape, spec.num_classes).to(device)
    optimizer = torch.optim.SGD(
        net.parameters(),
        lr=REFERENCE_LR,
        momentum=methods_mod.MOMENTUM,
        weight_decay=methods_mod.WEIGHT_DECAY,
    )

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from loader

    stream = batches()
    net.train()

    def train(count: int) -> int:
        samples = 0
        running_loss = 0.0
        for _ in range(count):
            x, y = next(stream)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            samples += y.shape[0]
        return samples

    train(WARMUP_STEPS)
    _sync(device)
    start = time.perf_counter()
    samples = train(steps)
    _sync(device)
    return samples / (time.perf_counter() - start)


def _round(
    config: RunConfig,
    group: list[RunConfig],
    steps: int,
    flops: FlopCount,
    data_root: str | Path | None,
    say: Callable[[str], None],
) -> dict[str, float]:
    """One round of every figure, and the ratios within it (side by side, same load)."""
    dev = resolve_device(config.device)
    figures: dict[str, float] = {}
    say("matmul peak")
    figures["peak_gflops"] = matmul_peak_gflops(dev)
    say(f"engine, {steps} steps")
    figures["engine_samples_per_s"] = engine_throughput(config, steps, data_root=data_root)
    if group:
        say(f"{len(group)} runs batched, {steps} steps")
        figures["batched_samples_per_s"] = batched_throughput(group, steps, data_root=data_root)
    say(f"reference loop, {steps} steps")
    figures["reference_samples_per_s"] = reference_throughput(
        config.model, config.dataset, steps, device=dev, data_root=data_root
    )
    figures["speedup"] = figures["engine_samples_per_s"] / figures["reference_samples_per_s"]
    for name in ("engine", "batched"):
        if f"{name}_samples_per_s" in figures:
            gflops = figures[f"{name}_samples_per_s"] * flops.train / 1e9
            figures[f"{name}_fraction_of_peak".removeprefix("engine_")] = (
                gflops / figures["peak_gflops"]
            )
    return figures


def run_benchmark(
    *,
    model: str = "nn2",
    dataset: str = "fashion-mnist",
    steps: int = 200,
    device: str = "auto",
    batched_k: int = 12,
    repeats: int = 3,
    data_root: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure engine, batched, reference and matmul peak; one dict of figures.

    ``batched_k=0`` skips the batched figure. Every figure is the best of ``repeats``
    interleaved rounds; the per-round figures, and the ratios within each round, are kept
    under ``rounds``.
    """
    if steps < 1 or repeats < 1 or batched_k < 0:
        raise ValueError("steps and repeats must be >= 1, batched_k >= 0")
    dev = resolve_device(device)
    config = RunConfig(
        dataset, model, "sig+", seed=0, batch_size=DEFAULT_BATCH_SIZE, device=str(dev)
    )
    config.validate()
    group = batched_configs(config, batched_k) if batched_k else []
    if group:
        from annealbench.training.batched import check_batchable

        check_batchable(group)
    flops = count_flops(model, dataset)
    say = progress or (lambda _message: None)
    rounds = [
        _round(
            config, group, steps, flops, data_root, lambda m, i=i: say(f"round {i}/{repeats}: {m}")
        )
        for i in range(1, repeats + 1)
    ]

    def best(key: str) -> float:
        values = [r[key] for r in rounds if key in r]
        return max(values) if values else math.nan

    peak = best("peak_gflops")
    engine_sps = best("engine_samples_per_s")
    batched_sps = best("batched_samples_per_s")
    reference_sps = best("reference_samples_per_s")
    engine_gflops = engine_sps * flops.train / 1e9
    batched_gflops = batched_sps * flops.train / 1e9
    figures = {
        "model": model,
        "dataset": dataset,
        "steps": steps,
        "batch_size": DEFAULT_BATCH_SIZE,
        "repeats": repeats,
        "device": str(dev),
        "device_name": _device_name(dev),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "engine_samples_per_s": engine_sps,
        "reference_samples_per_s": reference_sps,
        "speedup": engine_sps / reference_sps,
        "batched_k": batched_k,
        "batched_samples_per_s": batched_sps,
        "batched_speedup_over_engine": batched_sps / engine_sps,
        "batched_speedup_over_reference": batched_sps / reference_sps,
        "flops_per_sample": flops.train,
        "executed_flops_per_sample": flops.executed,
        "forward_flops_per_sample": flops.forward,
        "peak_gflops": peak,
        "engine_gflops": engine_gflops,
        "fraction_of_peak": engine_gflops / peak,
        "batched_gflops": batched_gflops,
        "batched_fraction_of_peak": batched_gflops / peak,
        "engine_gflops_executed": engine_sps * flops.executed / 1e9,
        "batched_gflops_executed": batched_sps * flops.executed / 1e9,
        "rounds": rounds,
    }
    # JSON has no NaN: a figure not measured (batched_k=0) is null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
