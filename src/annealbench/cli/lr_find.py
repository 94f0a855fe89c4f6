"""``annealbench lr-find``: the learning-rate range test, a suggested peak rate and its spread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from annealbench.cli.app import app, fail
from annealbench.training.config import DEFAULT_BATCH_SIZE


@app.command("lr-find")
def lr_find_command(
    dataset: str = typer.Option(
        ..., "--dataset", help="mnist, fashion-mnist, ..., or your dataset's path/reference."
    ),
    model: str = typer.Option(..., "--model", help="nn2, lenet4, ..., or module:factory."),
    method: str = typer.Option(
        "sig+", "--method", help="Whose optimizer to sweep (its schedule is replaced)."
    ),
    seeds: int = typer.Option(3, "--seeds", help="Seeds 0..N-1: the test is seed-sensitive."),
    steps: int = typer.Option(200, "--steps", help="Optimizer updates per seed (>= 10)."),
    min_lr: float = typer.Option(1e-5, "--min-lr", help="The sweep's first rate."),
    max_lr: float = typer.Option(10.0, "--max-lr", help="The sweep's last rate."),
    rule: str = typer.Option(
        "steepest",
        "--rule",
        help="steepest (descent of the median smoothed loss) or minimum (its minimum / 10).",
    ),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size"),
    subset: int | None = typer.Option(None, "--subset", help="Train on the first N images."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Draw loss against rate (median, min-max band) to .png/.pdf."
    ),
    csv_path: Path | None = typer.Option(
        None, "--csv", help="Write every seed's rate, loss and smoothed loss per update."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    data_root: Path | None = typer.Option(
        None, "--data-root", envvar="ANNEALBENCH_DATA", help="Dataset folder."
    ),
    methods_file: Path | None = typer.Option(
        None, "--methods-file", help="TOML file with \\[methods.NAME] tables of your own methods."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads (torch.set_num_threads); default torch's."
    ),
) -> None:
    """Sweep the rate exponentially from --min-lr to --max-lr, one update per mini-batch, for
    several seeds; suggest a peak rate and show how to use it."""
    from annealbench import lr_find

    lr_find.check_sweep(min_lr, max_lr, steps)
    if rule not in lr_find.RULES:
        raise fail(f"--rule must be one of {', '.join(lr_find.RULES)}, got {rule!r}")
    if seeds < 1:
        raise fail(f"--seeds must be >= 1, got {seeds}")
    _check_outputs(plot, csv_path)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    config = _checked_config(
        methods_file, dataset=dataset, model=model, method=method, batch_size=batch_size,
        subset=subset, device=device,
    )  # fmt: skip
    typer.echo(
        f"lr-find {dataset}/{model}, {method}'s optimizer ({config.method_spec().optimizer}): "
        f"{seeds} seed{'s' if seeds != 1 else ''} x {steps} updates, rate {min_lr:g} -> "
        f"{max_lr:g} (x{(max_lr / min_lr) ** (1 / (steps - 1)):.4g} per update), "
        f"batch {batch_size}"
    )
    try:
        result = lr_find.lr_find(
            config, seeds=seeds, steps=steps, min_lr=min_lr, max_lr=max_lr, rule=rule,
            data_root=data_root, progress=_print_seed,
        )  # fmt: skip
    except ValueError as exc:  # arguments torch or the data layer refuse
        raise fail(str(exc)) from None
    _write(result, plot, csv_path)
    _print_result(result)
    if result.suggestion is None:
        raise typer.Exit(1)


def _checked_config(methods_file: Path | None, **fields: Any) -> Any:
    """The sweep's run, checked as a one-run study is (names, options, ``subset`` against the
    dataset, the method's optimizer) before any data is loaded."""
    from annealbench import methods
    from annealbench.study import Study
    from annealbench.training import RunConfig

    if methods_file is not None:
        methods.load_file(methods_file)
    grid = {key: fields.pop(key) for key in ("dataset", "model", "method")}
    try:
        Study("lr-find", (grid["dataset"],), (grid["model"],), (grid["method"],), 1,
              fields).validate()  # fmt: skip
        config = RunConfig(**grid, epochs=1, **fields)
        config.validate()
    except ValueError as exc:
        raise fail(str(exc)) from None
    return config


def _check_outputs(plot: Path | None, csv_path: Path | None) -> None:
    """Refuse a plot that is not .png/.pdf and outputs whose folder cannot be written, before
    any training."""
    from annealbench.errors import StudyError
    from annealbench.study import check_folder

    if plot is not None and plot.suffix.lower() not in (".png", ".pdf"):
        raise fail(f"--plot needs a .png or .pdf file name, got {plot}")
    for option, path in (("--plot", plot), ("--csv", csv_path)):
        if path is None:
            continue
        if path.is_dir():
            raise fail(f"{option} {path} is a folder; give a file name")
        try:
            check_folder(path.parent, f"{option}'s folder")
        except StudyError as exc:
            raise fail(str(exc)) from None


def _print_seed(sweep: Any) -> None:
    done = len(sweep.losses)
    how = (
        f"stopped at update {done} of {sweep.planned} (diverged: smoothed loss over 4x its "
        f"minimum, at rate {sweep.rates[-1]:.3g})"
        if sweep.stopped_early
        else f"all {done} updates"
    )
    typer.echo(f"  seed {sweep.seed}: {how}")


def _write(result: Any, plot: Path | None, csv_path: Path | None) -> None:
    from annealbench import lr_find

    try:
        if plot is not None:
            plot.parent.mkdir(parents=True, exist_ok=True)
            lr_find.figure(result).savefig(plot)
            typer.echo(f"wrote {plot}")
        if csv_path is not None:
            lr_find.write_csv(result, csv_path)
            typer.echo(f"wrote {csv_path}")
    except OSError as exc:
        raise fail(f"cannot write {exc.filename or ''}: {exc.strerror or exc}") from None


def _print_result(result: Any) -> None:
    import numpy as np

    from annealbench import lr_find

    typer.echo(f"rule: {result.rule}: {lr_find.RULES[result.rule]}")
    per_seed = ", ".join(
        f"seed {s.seed}: {'none' if v is None else f'{v:.2g}'}"
        for s, v in zip(result.sweeps, result.per_seed, strict=True)
    )
    spread = result.spread()
    span = "" if spread is None else f" (spread {spread[0]:.2g} - {spread[1]:.2g})"
    typer.echo(f"per seed: {per_seed}{span}")
    if result.common >= 1:
        lowest = int(np.nanargmin(result.median[: result.common]))
        typer.echo(
            f"median smoothed loss: {result.median[0]:.4g} at the start, lowest "
            f"{result.median[lowest]:.4g} at rate {result.rates[lowest]:.3g} (above it the "
            "loss rises)"
        )
    if result.suggestion is None:
        typer.secho(
            "no suggestion: the median loss never descends before the sweep diverges; lower "
            "--min-lr, or give more --steps",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return
    typer.secho(f"suggested peak rate: {result.rounded:g}", bold=True)
    for line in lr_find.hints(result):
        typer.echo(line)
