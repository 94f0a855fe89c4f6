"""``annealbench run | status | presets | export``: run a study grid, watch it, list presets,
export its tables."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from annealbench.cli.app import DEFAULT_STORE, app, fail, plural
from annealbench.study import DEFAULT_TRIALS
from annealbench.training.config import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS

if TYPE_CHECKING:
    from annealbench.study import Study, StudyOutcome


def _split(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (None when the option was not given)."""
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _workers(value: str) -> int | str:
    """``--workers``: ``auto`` or a whole number (checked by the executor)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise fail(f"--workers must be 'auto' or a whole number, got {value!r}") from None


@app.command("run")
def run_command(  # long: one typer option per line, the command's whole interface
    study_file: Path | None = typer.Argument(
        None,
        help="A study file (TOML: datasets, models, methods, trials, [run] options, inline "
        "[methods.NAME] tables); options given here override it. Rerun it to resume.",
        show_default=False,
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="A shipped study (see `annealbench presets`); options override it."
    ),
    datasets: str | None = typer.Option(None, "--datasets", help="e.g. mnist,fashion-mnist"),
    models: str | None = typer.Option(None, "--models", help="e.g. nn2,nn3,lenet4,vgg9"),
    methods: str | None = typer.Option(
        None, "--methods", help="e.g. sig+,str+,adam (default: the paper's 12)"
    ),
    trials: int | None = typer.Option(
        None, "--trials", help=f"Seeds 0..N-1 (default: {DEFAULT_TRIALS})"
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help=f"Epochs per run (default: {DEFAULT_EPOCHS})."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help=f"(default: {DEFAULT_BATCH_SIZE})"
    ),
    subset: int | None = typer.Option(None, "--subset", help="Train on the first N images."),
    validation: str | None = typer.Option(
        None,
        "--validation",
        help="Hold out N training examples (or a fraction such as 0.1), the same for every "
        "run: every epoch records validation beside test, and the report selects on "
        "validation. Default: none (the paper's protocol).",
    ),
    step_per: str | None = typer.Option(
        None, "--step-per", help="Advance schedules every 'iteration' (default) or 'epoch'."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, ... (not part of the study: resume anywhere)"
    ),
    input_scaling: str | None = typer.Option(
        None,
        "--input-scaling",
        help="standard (per-channel mean/std, default) or unit (inputs in [0, 1]): a "
        "reading of the paper's unstated preprocessing (docs/fidelity.md).",
    ),
    weight_decay_on: str | None = typer.Option(
        None,
        "--weight-decay-on",
        help="all parameters (default) or weights (not biases): a reading of the paper.",
    ),
    budgets: str | None = typer.Option(
        None,
        "--budgets",
        help="Also train every final trial at these percentages of --epochs (e.g. 25,50,100), "
        "each a whole schedule in the shorter run (WSD keeps its warmup and plateau, and "
        "its shorter budgets start from the full run's checkpoint); the report draws "
        "accuracy and rank against budget.",
    ),
    tune_scales: str | None = typer.Option(
        None,
        "--tune-scales",
        help="Give each method its own peak rate: its whole rate curve times each of these "
        "factors (e.g. 0.25,0.5,1,2,4) is trained on the validation split (needs "
        "--validation), then the final trials use each method's best.",
    ),
    tune_trials: int | None = typer.Option(
        None, "--tune-trials", help="Tuning seeds per (method, scale) (default: 1)."
    ),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="SQLite results file."),
    study: str | None = typer.Option(
        None, "--study", help="Study name in the store (default: the preset's name, or 'default')."
    ),
    executor: str = typer.Option("local", "--executor", help="local or ray"),
    workers: str = typer.Option(
        "auto",
        "--workers",
        help="Local worker processes: a number, or auto (one per idle CPU core, measured by "
        "the load average, one thread each; one on a GPU).",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads per local worker (default: (cores - 1) / workers)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address, e.g. ray://head:10001 or auto."
    ),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="Ray: num_cpus per run."),
    gpu_fraction: float | None = typer.Option(
        None, "--gpu-fraction", help="Ray: num_gpus per run, e.g. 0.25 packs 4 runs per GPU."
    ),
    max_retries: int = typer.Option(
        2, "--max-retries", help="Retries of a run whose worker process dies."
    ),
    batched: str = typer.Option(
        "auto",
        "--batched",
        help="Train runs of one dataset and model together in one vectorized pass: auto "
        "(where measured faster: on the CPU nn2 with 4+ runs; on a GPU 2+ runs; never "
        "BatchNorm models), on (wherever possible; an error for BatchNorm models), off. "
        "Local executor only; Ray trains one run per task.",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", envvar="ANNEALBENCH_DATA", help="Dataset folder."
    ),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Per-run checkpoints (default: <store>.checkpoints)."
    ),
    methods_file: Path | None = typer.Option(
        None, "--methods-file", help="TOML file with \\[methods.NAME] tables of your own methods."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    log: list[str] = typer.Option(
        [],
        "--log",
        help="Mirror every run as it trains: tensorboard:DIR or mlflow:URI (e.g. "
        "mlflow:sqlite:///mlruns.db or mlflow:http://host:5000); repeat for several.",
    ),
) -> None:
    """Run a study (a STUDY_FILE, a --preset, or a grid of options), resuming whatever an
    earlier run left unfinished."""
    grid = {"preset": preset, "study": study, "datasets": datasets, "models": models,
            "methods": methods, "trials": trials, "methods_file": methods_file,
            "study_file": study_file, "tune_scales": _scales(tune_scales),
            "tune_trials": tune_trials, "budgets": _budgets(budgets)}  # fmt: skip
    options = {"epochs": epochs, "batch_size": batch_size, "subset": subset,
               "step_per": step_per, "device": device,
               "validation": _validation(validation), "input_scaling": input_scaling,
               "weight_decay_on": weight_decay_on}  # fmt: skip
    run_options = {"executor": executor, "workers": workers, "threads": threads,
                   "data_root": data_root, "checkpoint_dir": checkpoint_dir,
                   "address": address, "cpus_per_run": cpus_per_run,
                   "gpu_fraction": gpu_fraction, "max_retries": max_retries,
                   "progress": progress, "batched": batched, "log": tuple(log)}  # fmt: skip
    _run_study_from_options(store, grid, options, run_options)


def _validation(value: str | None) -> int | float | None:
    """``--validation``: a whole number of examples or a fraction (checked with the study)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        raise fail(
            f"--validation must be a number of examples (e.g. 5000) or a fraction (e.g. 0.1), "
            f"got {value!r}"
        ) from None


def _scales(value: str | None) -> tuple[float, ...] | None:
    """``--tune-scales 0.5,1,2`` as numbers (checked with the study)."""
    if value is None:
        return None
    try:
        return tuple(float(part) for part in _split(value) or ())
    except ValueError:
        raise fail(f"--tune-scales must be numbers separated by commas, got {value!r}") from None


def _budgets(value: str | None) -> tuple[int, ...] | None:
    """``--budgets 25,50,100`` as whole percentages (checked with the study)."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in _split(value) or ())
    except ValueError:
        raise fail(f"--budgets must be whole percentages like 25,50,100, got {value!r}") from None


def _study_from_options(
    preset: str | None,
    study: str | None,
    datasets: str | None,
    models: str | None,
    methods: str | None,
    trials: int | None,
    methods_file: Path | None,
    study_file: Path | None,
    options: dict[str, Any],
    tune_scales: tuple[float, ...] | None = None,
    tune_trials: int | None = None,
    budgets: tuple[int, ...] | None = None,
) -> Study:
    """The Study that ``annealbench run``'s options ask for (a study file or a preset,
    overridden, or a grid); loads ``methods_file`` first. A bad value raises ValueError."""
    from annealbench import methods as methods_module
    from annealbench import study_file as study_files
    from annealbench.study import Study, load_preset, paper_methods

    if methods_file is not None:
        methods_module.load_file(methods_file)
    if preset is not None and study_file is not None:
        raise fail(f"give a study file ({study_file}) or --preset {preset}, not both")
    if preset is not None or study_file is not None:
        overrides = {"datasets": _split(datasets), "models": _split(models),
                     "methods": _split(methods), "trials": trials, "tune_scales": tune_scales,
                     "tune_trials": tune_trials, "budgets": budgets, **options}  # fmt: skip
        if study_file is not None:
            grid = study_files.load(study_file, **overrides)
        else:
            grid = load_preset(preset, **overrides)
        if study is not None:  # "" too: validation refuses an empty name
            grid = dataclasses.replace(grid, name=study)
        return grid
    if datasets is None or models is None:
        raise fail(
            "give --datasets and --models (comma lists), a study file (annealbench run "
            "STUDY.toml), or --preset NAME (see `annealbench presets`)"
        )
    return Study(
        name="default" if study is None else study,
        datasets=_split(datasets) or (),
        models=_split(models) or (),
        methods=_split(methods) if methods is not None else paper_methods(),
        trials=DEFAULT_TRIALS if trials is None else trials,
        options={
            "epochs": DEFAULT_EPOCHS,
            **{k: v for k, v in options.items() if v is not None},
        },
        tune_scales=tune_scales or (),
        tune_trials=1 if tune_trials is None else tune_trials,
        budgets=budgets or (),
    )


def _run_study_from_options(
    store: Path, grid: dict[str, Any], options: dict[str, Any], run_options: dict[str, Any]
) -> None:
    """``annealbench run``'s logic: build the Study from the command's ``grid`` options and
    ``options`` (the study's run options), check it and ``run_options`` (how to run it)
    before anything is printed or stored, run it, print the outcome; exits non-zero when
    interrupted or when runs failed."""
    from annealbench.study import preflight
    from annealbench.study import run_study as run

    try:
        with _stop_signals():
            try:
                study = _study_from_options(**grid, options=options)
                how = {**run_options, "workers": _workers(run_options["workers"])}
                preflight(study, store, **{k: v for k, v in how.items() if k != "progress"})
                print(f"study {study.name!r}: {_grid_line(study)} -> {store}")
                outcome = run(study, store, **how)
            except ValueError as exc:  # a Study built from bad command-line values
                raise fail(str(exc)) from None
    except KeyboardInterrupt:  # before the study started, or after it stopped
        typer.secho(
            "interrupted; whatever was stored is kept. Resume with the same command.",
            fg=typer.colors.YELLOW, err=True,
        )  # fmt: skip
        raise typer.Exit(130) from None
    _print_outcome(outcome, store)


def _grid_line(study: Study) -> str:
    """``12 runs (1 dataset x 1 model x 12 methods x 1 trial)``."""
    trials = plural(study.trials, "trial")
    if study.tune_scales:
        scales = plural(len(study.tune_scales), "scale")
        trials = f"({trials} + {scales} x {study.tune_trials} tuning seed)"
    if study.budgets:
        budgets = sorted({*study.budgets, 100})
        trials += f" at {plural(len(budgets), 'budget')} ({', '.join(f'{b}%' for b in budgets)})"
    return (
        f"{plural(study.n_runs, 'run')} ({plural(len(study.datasets), 'dataset')} x "
        f"{plural(len(study.models), 'model')} x {plural(len(study.methods), 'method')} x "
        f"{trials})"
    )


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM while a study runs: the first stops it cleanly (a
    KeyboardInterrupt: run_study gives the runs in flight back); another one, while it
    stops or exits, ends the process at once, quietly, with status 130.

    The runs a second signal leaves ``running`` are handed out again at once by the next
    ``annealbench run`` on this host (their process is gone); checkpoints are atomic.
    """
    received = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal received
        received += 1
        if received == 1:
            raise KeyboardInterrupt
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os.write(2, b"\ninterrupted again: exiting now; rerun the same command to resume\n")
        os._exit(130)

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        # After a signal the command only prints and exits: ignore any more (a handler
        # would be reset at interpreter shutdown, and the signal would kill the process).
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_IGN if received else old)


def _print_outcome(outcome: StudyOutcome, store: Path) -> None:
    """Print the run's summary and what to do next; exit 130 when interrupted, 2 on a fatal
    error and 1 when runs failed."""
    from annealbench.study import resume_hint

    counts = outcome.counts
    where = shlex.quote(str(store))
    summary = ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed", "running", "pending")
    )
    print(f"study {outcome.study!r} in {store}: {summary} of {plural(outcome.total, 'run')}")
    if outcome.interrupted:
        typer.secho(
            f"stopped. Resume with the same command:\n  {resume_hint()}",
            fg=typer.colors.YELLOW, err=True,
        )  # fmt: skip
        raise typer.Exit(130)
    if outcome.fatal is not None:
        raise fail(
            f"stopped: {outcome.fatal}\nEvery run would fail the same way; fix it, then rerun "
            f"the same command to resume:\n  {resume_hint()}"
        )
    if counts.get("failed"):
        typer.secho(
            f"{plural(counts['failed'], 'run')} failed (errors in `annealbench status --store "
            f"{where}` and the run table); rerunning the same command retries them.",
            fg=typer.colors.RED, err=True,
        )  # fmt: skip
        raise typer.Exit(1)
    if outcome.remaining:
        being = "is" if outcome.remaining == 1 else "are"
        print(f"{plural(outcome.remaining, 'run')} {being} still being trained by other processes.")
    else:
        print(f"next: annealbench report --store {where}")


@app.command("status")
def status_command(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="SQLite results file."),
    study: str | None = typer.Option(None, "--study", help="Only this study."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: rows, total, orphaned, failed runs."
    ),
) -> None:
    """Print done, running, diverged, failed and remaining runs per dataset and model."""
    from annealbench.store import Store, StoreError

    try:
        with Store(store, readonly=True) as s:
            if study is not None:
                s.study_id(study)
            counts = s.status_frame(study)
            runs = s.runs_frame(study, tuning=True)  # a failed search run is listed too
            orphaned = s.orphaned_runs(study)
    except StoreError as exc:
        raise fail(str(exc)) from None
    numbers = ["total", "done", "running", "diverged", "failed", "remaining"]
    total = {key: int(counts[key].sum()) if not counts.empty else 0 for key in numbers}
    failed = runs[runs["status"] == "failed"]
    if as_json:
        columns = ["study", "dataset", "model", "method", "seed", "run_id", "error"]
        status = {
            "store": str(store),
            "rows": json.loads(counts.to_json(orient="records")),
            "total": total,
            "orphaned": len(orphaned),
            "failed": json.loads(failed[columns].to_json(orient="records")),
        }
        typer.echo(json.dumps(status, indent=2))
        return
    _print_status(store, counts, total, len(orphaned), failed)


def _print_status(
    store: Path, counts: Any, total: dict[str, int], orphaned: int, failed: Any
) -> None:
    """``status``'s table, its orphaned runs and its first 10 failed runs' errors."""
    import pandas as pd

    if counts.empty:
        print(f"{store} holds no runs yet")
        return
    totals = pd.DataFrame([{"study": "all", "dataset": "", "model": "", **total}])
    print(pd.concat([counts, totals], ignore_index=True).to_string(index=False))
    if orphaned:
        print(
            f"{orphaned} of the running runs lost their process (killed or crashed); "
            "the next `annealbench run` of their study continues them from their checkpoints."
        )
    for row in failed.head(10).itertuples(index=False):
        print(f"failed: {row.dataset}/{row.model}/{row.method}/seed{row.seed}: {row.error}")
    if len(failed) > 10:
        more = plural(len(failed) - 10, "more failed run")
        print(f"... and {more} (see `annealbench export --store {shlex.quote(str(store))}`)")


def _amount(value: float) -> str:
    return "<0.1" if value < 0.1 else f"{value:,.1f}"


def _flops(value: float) -> str:
    """FLOPs with an SI prefix: 1.5 TFLOP, 474 PFLOP, 17.9 EFLOP."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}FLOP"
    return f"{value:.3g} FLOP"


@app.command("presets")
def presets_command() -> None:
    """List the shipped study presets with their size and estimated compute."""
    from annealbench.study import ASSUMED_GPU_FLOPS, estimate, load_preset, preset_names

    print(f"{'preset':<20} {'runs':>5} {'epochs':>6} {'compute':>11} {'GPU-h*':>7}  grid")
    for name in preset_names():
        est, study = estimate(name), load_preset(name)
        grid = (
            f"{','.join(study.datasets)} x {','.join(study.models)} x "
            f"{plural(len(study.methods), 'method')} x {plural(study.trials, 'trial')}"
        )
        if study.options.get("subset"):
            grid += f", {plural(study.options['subset'], 'training image')}"
        print(
            f"{name:<20} {est['runs']:>5} {est['epochs']:>6} {_flops(est['pflop'] * 1e15):>11} "
            f"{_amount(est['gpu_hours']):>7}  {grid}"
        )
        if est["measured"]:
            print(f"{'':<20} measured: {est['measured']}")
    print(
        f"* GPU-hours at an assumed {ASSUMED_GPU_FLOPS / 1e12:.0f} TFLOP/s sustained; the small "
        "models run far below that, so read it as a lower bound. Run one with "
        "`annealbench run --preset NAME`."
    )


@app.command("export")
def export_command(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="SQLite results file."),
    out: Path = typer.Option(Path("export"), "--out", help="Folder for runs.* and epochs.*"),
    format: str = typer.Option("csv", "--format", help="csv or parquet"),
    study: str | None = typer.Option(None, "--study", help="Only this study."),
) -> None:
    """Write the run and epoch tables as CSV or Parquet, for pandas and other tools."""
    from annealbench.store import Store, StoreError

    if format not in ("csv", "parquet"):
        raise fail(f"unknown --format {format!r}; valid: csv, parquet")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise fail("parquet needs pyarrow: pip install 'annealbench[parquet]'") from None
    try:
        with Store(store, readonly=True) as s:
            if study is not None:
                s.study_id(study)
            tables = {"runs": s.runs_frame(study), "epochs": s.epochs_frame(study)}
    except StoreError as exc:
        raise fail(str(exc)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, frame in tables.items():
            path = out / f"{name}.{format}"
            if format == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
            print(f"wrote {path} ({plural(len(frame), 'row')})")
    except OSError as exc:
        raise fail(f"cannot write to {out}: {exc.strerror or exc}") from None
