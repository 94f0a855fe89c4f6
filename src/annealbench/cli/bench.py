"""``annealbench bench``: engine vs batched vs the common PyTorch loop, and the matmul peak."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from annealbench.cli.app import app, fail, plural
from annealbench.training.config import DEFAULT_BATCH_SIZE


@app.command("bench")
def bench_command(
    model: str = typer.Option("nn2", "--model", help="nn2, nn3, lenet4, vgg9, ..."),
    dataset: str = typer.Option("fashion-mnist", "--dataset"),
    steps: int = typer.Option(
        200, "--steps", help=f"Training steps (batch {DEFAULT_BATCH_SIZE}) per figure."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    batched_k: int = typer.Option(
        12, "--batched-k", help="Runs trained together for the batched figure (0: skip it)."
    ),
    repeats: int = typer.Option(
        3, "--repeats", help="Interleaved rounds; each figure is the best of them."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch.set_num_threads for every figure (default: torch's)."
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", envvar="ANNEALBENCH_DATA", help="Dataset folder."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Measure training samples/s side by side: engine, batched runs, reference loop."""
    import torch

    from annealbench import bench

    if steps < 1:
        raise fail(f"--steps must be >= 1, got {steps}")
    if repeats < 1:
        raise fail(f"--repeats must be >= 1, got {repeats}")
    if batched_k < 0:
        raise fail(f"--batched-k must be >= 0, got {batched_k}")
    if threads is not None:
        if threads < 1:
            raise fail(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)

    def say(message: str) -> None:
        typer.echo(message, err=True)

    try:
        figures = bench.run_benchmark(
            model=model,
            dataset=dataset,
            steps=steps,
            device=device,
            batched_k=batched_k,
            repeats=repeats,
            data_root=data_root,
            progress=None if as_json else say,
        )
    except ValueError as exc:  # arguments torch or the data layer refuse
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    _print_table(figures)


def _print_table(f: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{f['model']} on {f['dataset']}, batch {f['batch_size']}, "
        f"{plural(f['steps'], 'step')}, {f['device']} ({f['device_name']}), "
        f"{plural(f['threads'], 'thread')}, torch {f['torch_version']}"
    )
    for column in ("loop", "samples/s", "vs reference", "GFLOP/s", "of peak"):
        table.add_column(column, justify="right" if column != "loop" else "left")
    reference = f["reference_samples_per_s"]
    rows = [("engine, 1 run", f["engine_samples_per_s"], f["engine_gflops"])]
    if f["batched_samples_per_s"] is not None:
        rows.append(
            (
                f"batched, {plural(f['batched_k'], 'run')}",
                f["batched_samples_per_s"],
                f["batched_gflops"],
            )
        )
    rows.append(("reference (DataLoader)", reference, reference * f["flops_per_sample"] / 1e9))
    for name, sps, gflops in rows:
        table.add_row(
            name,
            f"{sps:,.0f}",
            f"{sps / reference:.1f}x",
            f"{gflops:.1f}",
            f"{gflops / f['peak_gflops']:.0%}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"matmul peak {f['peak_gflops']:.1f} GFLOP/s (fp32 torch.mm); "
        f"{f['flops_per_sample'] / 1e6:.2f} MFLOP per sample (3x forward; "
        f"{f['executed_flops_per_sample'] / 1e6:.2f} executed by autograd)"
    )
