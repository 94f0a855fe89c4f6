"""``annealbench train``: one run, with a progress bar and a table of per-epoch metrics."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer

from annealbench.cli.app import app, fail
from annealbench.errors import UsageError
from annealbench.training.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS


@app.command("train")
def train_command(
    dataset: str = typer.Option(..., "--dataset", help="mnist, fashion-mnist, svhn, cifar10, ..."),
    model: str = typer.Option(..., "--model", help="nn2, nn3, lenet4, vgg9, resnet18, ..."),
    method: str = typer.Option(..., "--method", help="One of the 12 methods, e.g. sig+."),
    seed: int = typer.Option(0, "--seed", help="Trial seed: initial weights and batch order."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs"),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size"),
    subset: int | None = typer.Option(None, "--subset", help="Train on the first N images."),
    step_per: str = typer.Option(
        "iteration", "--step-per", help="Advance the schedule every 'iteration' or 'epoch'."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    data_root: Path | None = typer.Option(
        None, "--data-root", envvar="ANNEALBENCH_DATA", help="Dataset folder."
    ),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint file: saved every epoch, resumed if present."
    ),
    methods_file: Path | None = typer.Option(
        None, "--methods-file", help="TOML file with \\[methods.NAME] tables of your own methods."
    ),
    channels_last: bool = typer.Option(False, "--channels-last"),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast (changes numbers)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads (torch.set_num_threads); default torch's."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print only one JSON object: config, status, error, epochs."
    ),
) -> None:
    """Train one run and print its per-epoch metrics."""
    from annealbench.training import train

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        config = _checked_config(
            methods_file, data_root, checkpoint, dataset=dataset, model=model, method=method,
            seed=seed, epochs=epochs, batch_size=batch_size, subset=subset, step_per=step_per,
            device=device, channels_last=channels_last, bf16=bf16, compile=compile_model,
        )  # fmt: skip
        # --json: stdout holds the JSON alone (anything a download prints goes to stderr)
        quiet = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
        with quiet:
            result = train(config, data_root=data_root, checkpoint_path=checkpoint, progress=True)
    except ValueError as exc:  # arguments torch or the data layer refuse
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(_result_json(result), indent=2))
    else:
        _print_table(result)
    if result.status == "diverged":
        typer.secho(f"run diverged: {result.error}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(1)


def _result_json(result: Any) -> dict[str, Any]:
    """A RunResult as plain JSON data; a non-finite number (a diverged loss) is null."""

    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return {
        "config": result.config.to_dict(),
        "status": result.status,
        "error": result.error,
        "resumed_from": result.resumed_from,
        "epochs": [
            {key: finite(value) for key, value in dataclasses.asdict(record).items()}
            for record in result.epochs
        ],
    }


def _print_table(result: Any) -> None:
    """The per-epoch metrics of ``result`` as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.config.label()}  \\[{result.status}]")
    for col in ("epoch", "lr", "train loss", "train acc %", "test loss", "test acc %", "time s"):
        table.add_column(col, justify="right")
    for r in result.epochs:
        table.add_row(
            str(r.epoch),
            f"{r.lr:.5f}",
            f"{r.train_loss:.4f}",
            f"{r.train_acc:.2f}",
            f"{r.test_loss:.4f}",
            f"{r.test_acc:.2f}",
            f"{r.wall_time:.1f}",
        )
    Console().print(table)


def _checked_config(
    methods_file: Path | None, data_root: Path | None, checkpoint: Path | None, **fields: Any
) -> Any:
    """The run ``train`` asks for, checked as a one-run study is (names, options, ``subset``
    against the dataset, the method's optimizer and schedule) before any data is loaded;
    ``--data-root`` must be a folder and ``--checkpoint`` a regular file where they exist
    (a FIFO would block the first read forever). Raises ValueError naming the problem."""
    from annealbench import methods
    from annealbench.study import Study, check_folder
    from annealbench.training import RunConfig

    if methods_file is not None:
        methods.load_file(methods_file)
    grid = {key: fields.pop(key) for key in ("dataset", "model", "method")}
    seed = fields.pop("seed")
    Study("train", (grid["dataset"],), (grid["model"],), (grid["method"],), 1, fields).validate()
    config = RunConfig(**grid, seed=seed, **fields)
    config.validate()
    if data_root is not None and data_root.exists() and not data_root.is_dir():
        raise UsageError(
            f"--data-root {data_root} is not a folder; give the folder that holds (or will "
            "hold) the datasets, or leave it out for the default"
        )
    if checkpoint is not None:
        if checkpoint.exists() and not checkpoint.is_file():
            raise UsageError(
                f"--checkpoint {checkpoint} exists and is not a regular file; give a file path "
                "(written after every epoch, resumed from when it exists)"
            )
        check_folder(checkpoint.parent, "--checkpoint's folder")
    return config
