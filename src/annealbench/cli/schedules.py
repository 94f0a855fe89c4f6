"""``annealbench schedules``: list the schedules, draw Figure 1, or write their values; or
preview exactly the rates of a run: a schedule from a spec (``--schedule
'wsd:decay_fraction=0.1'``) or a methods file, over ``--total-steps`` updates after
``--warmup-steps`` of warmup.

A preview's rate of update ``k`` (``k = 0 .. N-1`` of ``N = --total-steps``) is
``schedule(k / N)``, as the engine's rate plan and ``AnnealingLR`` compute it. A warmup of
``W`` updates is ``schedules.warmup(schedule, W / N)``, the same composition as a ``+``
schedule with ``warmup_fraction = W / N``: updates ``0 .. W-1`` ramp linearly from a tenth
of the peak (update ``k`` at ``k / W`` of the way) and update ``W`` is the schedule's own
first rate, exactly. After it, the schedule runs at ``(k/N - W/N) / (1 - W/N)``, which is
``(k - W) / (N - W)`` up to float rounding: the rates agree with that reading to ~1e-14
relative, except that a staircase milestone landing exactly on an update may drop one
update later or earlier.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import typer

from annealbench import schedules
from annealbench.cli.app import app, fail, plural
from annealbench.training.config import DEFAULT_EPOCHS

#: A preview's length without --total-steps.
DEFAULT_PREVIEW_STEPS = 100
#: The most points a preview plot draws (evenly spaced updates beyond it).
PLOT_POINTS = 4000


@app.command("schedules")
def schedules_command(
    plot: Path | None = typer.Option(
        None, "--plot", help="Draw the paper's Figure 1 (or the preview) to a .png or .pdf file."
    ),
    csv_path: Path | None = typer.Option(
        None,
        "--csv",
        help="Write every schedule's rate at --steps evenly spaced steps (a preview: the rate "
        "of every update).",
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Points for --csv (from p=0 to p=1; default 101); a preview: that many evenly "
        "spaced updates instead of every one.",
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", help=f"Length of the run drawn by --plot (default {DEFAULT_EPOCHS})."
    ),
    chosen: str | None = typer.Option(
        None,
        "--schedules",
        help="Comma-separated names (e.g. sig,sig+,cosine): list, plot or export exactly "
        "these; --plot draws one panel each. Default: list and export all, plot Figure 1. "
        "With --methods-file, a method of the file stands for its schedule.",
    ),
    specs: list[str] | None = typer.Option(
        None,
        "--schedule",
        help="Preview a schedule with settings: NAME or NAME:key=value,key=value (e.g. "
        "'wsd:decay_fraction=0.1,cooldown=1-sqrt'; lists as [a,b]). Repeatable.",
    ),
    methods_file: Path | None = typer.Option(
        None,
        "--methods-file",
        help="TOML file with \\[methods.NAME] tables: --schedules NAME previews that "
        "method's schedule.",
    ),
    total_steps: int | None = typer.Option(
        None,
        "--total-steps",
        help=f"Preview over N optimizer updates (default {DEFAULT_PREVIEW_STEPS}); the x axis "
        "is then updates.",
    ),
    warmup_steps: int = typer.Option(
        0,
        "--warmup-steps",
        help="A linear warmup over the first W of the --total-steps updates, in front of the "
        "schedule (schedules.warmup with fraction W/N).",
    ),
) -> None:
    """List the learning-rate schedules, or plot/export them; or preview a run's rates."""
    preview = bool(specs) or methods_file is not None or total_steps is not None
    if preview or warmup_steps:
        if epochs is not None:
            raise fail("--epochs sets Figure 1's length; a preview's length is --total-steps")
        curves = _preview_curves(chosen, specs or [], methods_file)
        _preview(curves, total_steps, warmup_steps, plot, csv_path, steps)
        return
    names = _chosen_names(chosen)
    if plot is None and csv_path is None:
        width = max(len(n) for n in names or schedules.names())
        for name in names or schedules.names():
            tag = "paper" if name in schedules.PAPER_SCHEDULES else "     "
            typer.echo(f"{name:<{width}}  {tag}  {schedules.describe(name)}")
        return
    if plot is not None:
        _figure_1(plot, DEFAULT_EPOCHS if epochs is None else epochs, names)
    if csv_path is not None:
        _progress_csv(csv_path, 101 if steps is None else steps, names)


def _figure_1(plot: Path, epochs: int, names: list[str] | None) -> None:
    _check_plot_name(plot)
    if epochs < 1:
        raise fail(f"--epochs must be >= 1, got {epochs}")
    from annealbench.report.figures import schedules_figure

    _save(plot, lambda: schedules_figure(epochs, names))


def _progress_csv(csv_path: Path, steps: int, names: list[str] | None) -> None:
    if steps < 2:
        raise fail(f"--steps must be >= 2 (the first and the last step), got {steps}")
    import numpy as np

    progress = np.linspace(0.0, 1.0, steps)
    columns = {name: schedules.get(name)(progress) for name in names or schedules.names()}
    _write_csv(csv_path, list(range(steps)), progress, columns)
    typer.echo(f"wrote {csv_path} ({steps} steps x {len(columns)} schedules)")


def _check_plot_name(plot: Path) -> None:
    if plot.suffix.lower() not in (".png", ".pdf"):
        raise fail(f"--plot needs a .png or .pdf file name, got {plot}")


def _save(plot: Path, draw: Any) -> None:
    try:
        plot.parent.mkdir(parents=True, exist_ok=True)
        draw().savefig(plot)
    except OSError as exc:
        raise fail(f"cannot write {plot}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {plot}")


def _write_csv(path: Path, steps: list[int], progress: Any, columns: dict[str, Any]) -> None:
    """One row per step: step, progress, then each column's rate (repr: exact)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["step", "progress", *columns])
            for i, (step, p) in enumerate(zip(steps, progress, strict=True)):
                rates = (repr(float(v[i])) for v in columns.values())
                writer.writerow([step, f"{p:.6g}", *rates])
    except OSError as exc:
        raise fail(f"cannot write {path}: {exc.strerror or exc}") from None


def _chosen_names(chosen: str | None, also: tuple[str, ...] = ()) -> list[str] | None:
    """The names of ``--schedules a,b,c`` (None when not given); names neither a schedule's
    nor in ``also`` (the methods file's methods) fail."""
    if chosen is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in chosen.split(",") if n.strip()))
    if not names:
        raise fail("--schedules needs at least one name, e.g. --schedules sig,sig+")
    unknown = [n for n in names if n not in schedules.names() and n not in also]
    if unknown:
        methods = f"; methods of --methods-file: {', '.join(also)}" if also else ""
        raise fail(
            f"unknown schedule(s) {', '.join(unknown)} in --schedules; "
            f"valid: {', '.join(schedules.names())}{methods}"
        )
    return names


# --------------------------------------------------------------------------- preview


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` -> (NAME, settings). A value is an int or a float where
    it reads as one, a TOML array or boolean (``[0.1,0.01]``, ``true``), else a string.
    Raises typer.Exit (status 2) with the problem for a malformed spec."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise fail(f"--schedule {spec!r} has no schedule name; e.g. --schedule 'cosine:lr_up=0.2'")
    settings: dict[str, Any] = {}
    for item in _split_settings(rest):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise fail(
                f"--schedule {spec!r}: {item.strip()!r} is not key=value; give e.g. "
                f"'{name}:lr_up=0.2,lr_low=0'"
            )
        if key in settings:
            raise fail(f"--schedule {spec!r} sets {key} twice")
        settings[key] = _value(value.strip())
    return name, settings


def _split_settings(text: str) -> list[str]:
    """``a=1,b=[2,3]`` -> ``["a=1", "b=[2,3]"]``: commas inside brackets are the value's."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item for item in items if item.strip()]


def _value(text: str) -> Any:
    """A setting's value: int, float, a TOML array or boolean, else the text itself."""
    import tomllib

    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def _from_spec(spec: str) -> schedules.Schedule:
    name, settings = parse_spec(spec)
    try:
        return schedules.get(name, **settings)
    except ValueError as exc:  # ScheduleError: the factory names the setting and the fix
        raise fail(f"--schedule {spec!r}: {exc}") from None
    except TypeError as exc:  # a value of the wrong kind, e.g. a number for a list
        raise fail(
            f"--schedule {spec!r}: a setting has the wrong kind of value ({exc}); give "
            "numbers as 0.1 or 1e-3 and lists as [0.1,0.01]"
        ) from None


def _preview_curves(
    chosen: str | None, specs: list[str], methods_file: Path | None
) -> dict[str, schedules.Schedule]:
    """Label -> schedule of every curve a preview shows: --schedules names (a methods file's
    methods by their schedule), then each --schedule spec."""
    from annealbench import methods

    loaded = {m.name: m for m in methods.load_file(methods_file)} if methods_file else {}
    curves: dict[str, schedules.Schedule] = {}
    for name in _chosen_names(chosen, tuple(loaded)) or []:
        if name in loaded:  # adaptive optimizers without a rate: the shallow models' rate
            curves[name] = loaded[name].schedule_for("", deep=False)
        else:
            curves[name] = schedules.get(name)
    for spec in specs:
        curves[spec] = _from_spec(spec)
    if not curves:
        raise fail(
            "a preview needs a schedule: --schedule 'cosine:lr_up=0.2', --schedules NAME, or "
            "--methods-file FILE --schedules METHOD"
        )
    return curves


def _preview(
    curves: dict[str, schedules.Schedule],
    total_steps: int | None,
    warmup_steps: int,
    plot: Path | None,
    csv_path: Path | None,
    points: int | None,
) -> None:
    """List, plot or export the rates of every update of a ``total_steps`` run."""
    import numpy as np

    total = DEFAULT_PREVIEW_STEPS if total_steps is None else total_steps
    if total < 1:
        raise fail(f"--total-steps must be >= 1, got {total}")
    if not 0 <= warmup_steps < total:
        raise fail(
            f"--warmup-steps must be >= 0 and below --total-steps ({total}), got {warmup_steps}"
        )
    if points is not None and points < 2:
        raise fail(f"--steps must be >= 2 (the first and the last update), got {points}")
    if plot is not None:
        _check_plot_name(plot)
    if warmup_steps:
        _note_double_warmup(curves)
        curves = {
            label: schedules.warmup(schedule, warmup_steps / total)
            for label, schedule in curves.items()
        }
    every = np.arange(total)
    if plot is None and csv_path is None:
        for label, schedule in curves.items():
            rates = schedule(every / total)
            top = int(np.argmax(rates))
            typer.echo(
                f"{label}: {_length(total, warmup_steps)}: first {rates[0]:.6g}, peak "
                f"{rates[top]:.6g} at update {top}, last {rates[-1]:.6g}"
            )
        return
    if plot is not None:
        shown = _spaced(total, min(PLOT_POINTS, points or PLOT_POINTS))
        _save(plot, lambda: _preview_figure(curves, shown, total, warmup_steps))
    if csv_path is not None:
        rows = every if points is None else _spaced(total, points)
        columns = {label: schedule(rows / total) for label, schedule in curves.items()}
        _write_csv(csv_path, [int(k) for k in rows], rows / total, columns)
        typer.echo(
            f"wrote {csv_path} ({plural(len(rows), 'update')} x {plural(len(columns), 'schedule')})"
        )


def _note_double_warmup(curves: dict[str, schedules.Schedule]) -> None:
    """Say so on stderr when --warmup-steps goes in front of a schedule that warms up itself."""
    from annealbench.report.figures import schedule_kind

    for label, schedule in curves.items():
        if schedule_kind(schedule) == "warmup":
            typer.secho(
                f"note: {label} warms up itself; --warmup-steps adds a second warmup in front "
                "(give warmup_fraction=0 in its spec for one)",
                fg=typer.colors.YELLOW,
                err=True,
            )


def _spaced(total: int, points: int) -> Any:
    """At most ``points`` updates from 0 to ``total - 1``, evenly spaced (all if fewer)."""
    import numpy as np

    return np.unique(np.round(np.linspace(0, total - 1, min(points, total))).astype(int))


def _length(total: int, warmup_steps: int) -> str:
    warm = f", the first {warmup_steps} warming up" if warmup_steps else ""
    return f"{total} updates{warm}"


def _preview_figure(
    curves: dict[str, schedules.Schedule], shown: Any, total: int, warmup_steps: int
) -> Any:
    """The rate of each update (x: update), every curve on one panel; gid = its label."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.0), dpi=120)
    ax = fig.subplots()
    for label, schedule in curves.items():
        style = "steps-post" if len(shown) == total else "default"
        ax.plot(shown, schedule(shown / total), lw=1.8, label=label, drawstyle=style)
        ax.lines[-1].set_gid(label)
    if warmup_steps:
        ax.axvline(warmup_steps, color="0.5", lw=0.8, ls=":")
    ax.set_xlim(0, max(total - 1, 1))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("optimizer update (step)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"Learning rate of every update: {_length(total, warmup_steps)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
