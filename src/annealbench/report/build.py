"""Assemble the report: analyse the store's frames, then write CSVs, tables, figures and HTML."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from annealbench.errors import ReportError
from annealbench.report import budgets, distance, figures, stats, tables, tuned
from annealbench.report.html import Page
from annealbench.report.paper import (
    CITATION,
    PAPER_EPOCHS,
    PAPER_TRIALS,
    dataset_label,
    model_label,
    order_datasets,
    protocol_differences,
    short_reference,
    unique_labels,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_COLUMNS = ["run_id", "dataset", "model", "method", "seed", "status"]
EPOCH_COLUMNS = ["run_id", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]
EPOCHS_CSV_COLUMNS = [
    "dataset",
    "model",
    "method",
    "seed",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "val_loss",
    "val_acc",
    "wall_time",
    "status",
    "run_id",
]
#: Epoch columns read when present: validation (NaN without a split) and the time.
OPTIONAL_EPOCH_COLUMNS = ["val_loss", "val_acc", "wall_time"]

DEFINITIONS: list[tuple[str, str]] = [
    (
        "score of a run",
        "the mean test accuracy (%) over the last 10% of the run's epochs "
        "(floor(0.1 x epochs), at least one epoch): 10 epochs of a 100-epoch run.",
    ),
    ("trials", "finished runs of a cell (dataset, model, method); each seed is one trial."),
    ("ave", "the mean of the scores over the trials (the paper's 'average')."),
    ("max", "the best trial's score (the paper's 'maximum')."),
    ("peak", "the best single-epoch test accuracy over all epochs of all trials."),
    ("std", "the sample standard deviation of the scores (ddof = 1)."),
    (
        "95% CI",
        "ave ± t(0.975, trials-1) x std / sqrt(trials): the t-distribution interval of the mean "
        "score; undefined with one trial.",
    ),
    (
        "diverged",
        "runs stopped by a non-finite loss. They are counted (†k) and left out of every "
        "statistic, never averaged in as chance-level accuracy.",
    ),
    (
        "paired tests",
        "each method against the row's best method (highest ave) and against sig+, paired by "
        "seed (same seed = same initial weights and batch order), over the seeds both finished. "
        "Wilcoxon signed-rank (two-sided) with at least 6 pairs, a paired t-test with 2 to 5 "
        "(the Wilcoxon test cannot reach p < 0.05 with fewer than 6 pairs), none with fewer. "
        "Holm's correction over the comparisons of one row against one reference; significant "
        "means Holm-adjusted p < 0.05. diff = mean of (method - reference).",
    ),
    (
        "average rank",
        "each method's rank by ave within each row (1 = best, ties share their mean rank), "
        "averaged over the rows where it finished; the Friedman test asks whether the methods "
        "rank alike over the rows where all of them finished.",
    ),
]
#: Added to :data:`DEFINITIONS` when a row follows the paper's protocol.
PAPER_DEFINITIONS: list[tuple[str, str]] = [
    ("paper protocol", stats.PAPER_PROTOCOL + ": " + stats.TEST_SELECTION_CAUTION + "."),
]
#: Added to :data:`DEFINITIONS` when a row follows the validation protocol.
VALIDATION_DEFINITIONS: list[tuple[str, str]] = [
    (
        "validation protocol",
        "a study that holds part of the training set out as a validation split selects on it "
        "and reports the test set at the selected points: the best method of a row is the one "
        "with the highest val ave (also for the ranks and the paired tests' reference); ave, "
        "max, std, the 95% CI and the paired tests stay on the test scores.",
    ),
    (
        "val score of a run",
        "its mean validation accuracy (%) over the last 10% of its epochs (as the score, on the "
        "validation split); val ave = their mean over the trials, val std their standard "
        "deviation.",
    ),
    (
        "test @ best val epoch",
        "the test accuracy of a run at its epoch of best validation accuracy (the first, on "
        "ties), averaged over the trials: what early stopping on validation would report.",
    ),
]


@dataclass
class Analysis:
    """Everything the report shows, as DataFrames computed from the store's two frames."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    scores: pd.DataFrame
    summary: pd.DataFrame
    tests: pd.DataFrame
    ranks: pd.DataFrame
    friedman: dict[str, float | int] | None
    missing: pd.DataFrame
    verdicts: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: :func:`stats.distance_to_paper`'s two frames (with ``run_options`` when studies differ).
    distance: pd.DataFrame = field(default_factory=pd.DataFrame)
    orderings: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: A tuned study's search, per method and scale (:func:`tuned.search_grid`); empty when
    #: no study of the report has a search.
    tuning: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=tuned.GRID_COLUMNS))
    #: Results at each training budget (:func:`budgets.budget_table`); empty when every run
    #: is a full-budget run. Every other field holds the full-budget runs only.
    budgets: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=budgets.COLUMNS))

    @property
    def done_epochs(self) -> pd.DataFrame:
        """Epochs of finished runs only (what the curves average)."""
        done = self.runs.loc[self.runs["status"] == stats.DONE, "run_id"]
        return self.epochs[self.epochs["run_id"].isin(done)]

    @property
    def datasets(self) -> list[str]:
        return order_datasets(self.summary["dataset"])


def analyze(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    settings: dict[str, dict[str, Any]] | None = None,
    search: pd.DataFrame | None = None,
) -> Analysis:
    """Scores, per-cell summary, paired tests and ranks from ``runs_frame``/``epochs_frame``;
    ``settings``: each study's ``Store.study_settings`` (what the report says was run);
    ``search``: a tuned study's search runs (:func:`tuned.search_scores`), if any."""
    missing_columns = [c for c in RUN_COLUMNS if c not in runs] + [
        c for c in EPOCH_COLUMNS if c not in epochs
    ]
    if missing_columns:
        raise ReportError(f"the store's frames lack the columns {missing_columns}")
    if runs.empty:
        raise ReportError("the store holds no runs: nothing to report")
    runs = runs.copy()
    runs["method"] = runs["method"].astype(str)
    by_budget = pd.DataFrame(columns=budgets.COLUMNS)
    full, shorter = budgets.split(runs)
    if shorter:
        try:
            by_budget = budgets.budget_table(runs, epochs)
        except ValueError as exc:
            raise ReportError(str(exc)) from exc
        runs = full
    # The run's key and status come from the runs frame (the source of truth for statuses).
    own = [c for c in epochs.columns if c in EPOCH_COLUMNS or c in OPTIONAL_EPOCH_COLUMNS]
    epochs = epochs[own].merge(runs[RUN_COLUMNS], on="run_id", how="inner")
    epochs = epochs[[c for c in EPOCHS_CSV_COLUMNS if c in epochs]]
    try:
        scores = stats.run_scores(runs, epochs)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    summary = stats.summarize(runs, scores)
    summary["holdout"] = _holdouts(summary, runs, dict(settings or {}))
    tests = stats.paired_tests(summary, scores)
    settings = dict(settings or {})
    gap, orderings = stats.distance_to_paper(summary, tests, study_protocols(summary, settings))
    return Analysis(
        runs=runs,
        epochs=stats.sort_cells(epochs).reset_index(drop=True) if len(epochs) else epochs,
        scores=scores,
        summary=summary,
        tests=tests,
        ranks=stats.average_ranks(summary),
        friedman=stats.friedman(summary),
        missing=stats.missing_runs(summary),
        verdicts=stats.verdicts(summary, tests),
        settings=settings,
        distance=distance.with_run_options(gap, settings),
        orderings=orderings,
        tuning=tuned.search_grid(search, runs),
        budgets=by_budget,
    )


def study_of(settings: dict[str, dict[str, Any]], study: object) -> dict[str, Any]:
    """The settings of ``study`` (a runs frame's study value); the only study's settings when
    there is one; else empty."""
    if isinstance(study, str) and study in settings:
        return settings[study]
    return next(iter(settings.values())) if len(settings) == 1 else {}


def study_protocols(
    summary: pd.DataFrame, settings: dict[str, dict[str, Any]]
) -> dict[str, list[str]]:
    """Per study of ``summary`` whose settings record its epochs: how its protocol differs from
    the paper's (epochs, subset, validation split; trials aside), in words."""
    out = {}
    for study in _distinct(summary["study"]) if "study" in summary else []:
        own = study_of(settings, study)
        run = own.get("run") if isinstance(own.get("run"), dict) else {}
        epochs, subset = run.get("epochs", own.get("epochs")), run.get("subset")
        if epochs is None:
            continue  # judged by its rows' epochs
        held = stats.holdout_text(validation_setting(own))
        subset = int(float(subset)) if subset else None
        out[study] = protocol_differences(PAPER_TRIALS, int(float(epochs)), subset, held)
    return out


def validation_setting(settings: dict[str, Any]) -> object:
    """A study's ``run.validation`` (an int, a fraction, or None: no validation split)."""
    run = settings.get("run") if isinstance(settings.get("run"), dict) else {}
    return run.get("validation", settings.get("validation"))


def _holdouts(
    summary: pd.DataFrame, runs: pd.DataFrame, settings: dict[str, dict[str, Any]]
) -> list[str]:
    """Per summary row: what its study held out for validation, in words (empty: nothing
    recorded), from the study settings of the cell's runs."""
    if "study" in runs:
        studies = runs.groupby(stats.CELL)["study"].first()
    else:
        studies = pd.Series(dtype=object)
    out = []
    for key in summary[stats.CELL].itertuples(index=False, name=None):
        study = studies.get(key)
        out.append(stats.holdout_text(validation_setting(study_of(settings, study))))
    return out


def definitions_for(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """:data:`DEFINITIONS`, then those of the protocols the rows of ``summary`` follow."""
    protocols = set(summary["protocol"]) if "protocol" in summary else {stats.PAPER}
    out = list(DEFINITIONS)
    if stats.PAPER in protocols:
        out += PAPER_DEFINITIONS
    if stats.VALIDATION in protocols:
        out += VALIDATION_DEFINITIONS
    return out


@dataclass
class ReportFiles:
    """The paths written by :func:`write_report`."""

    folder: Path
    html: Path
    files: list[Path] = field(default_factory=list)


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportError(
            f"cannot write the report to {folder}: {reason}; pass a writable --out folder"
        ) from exc


def _write_text(path: Path, text: str, written: list[Path]) -> None:
    path.write_text(text, encoding="utf-8")
    written.append(path)


def _write_csv(path: Path, frame: pd.DataFrame, written: list[Path]) -> None:
    frame.to_csv(path, index=False, float_format="%.10g")
    written.append(path)


SUMMARY_COLUMNS = [
    "dataset",
    "model",
    "method",
    "trials",
    "diverged",
    "missing",
    "missing_detail",
    "runs",
    "epochs",
    "ave",
    "max",
    "peak",
    "std",
    "ci_low",
    "ci_high",
    "paper_ave",
    "paper_max",
    "diff_ave",
    "diff_max",
    "protocol",
    "holdout",
    "selection",
    "selected",
    "val_ave",
    "val_max",
    "val_std",
    "test_at_best_val_ave",
    "test_at_best_val_std",
]


def _distinct(values: object) -> list[str]:
    """Unique non-missing values as strings, in order of appearance."""
    series = pd.Series(values, dtype=object).dropna()
    return list(dict.fromkeys(str(v) for v in series if str(v) != ""))


def _run_setting(analysis: Analysis, name: str) -> list[str]:
    """One run option (epochs, batch_size, subset, step_per) from the studies' settings, or
    else from the runs frame."""
    found = [
        settings.get("run", {}).get(name, settings.get(name))
        for settings in analysis.settings.values()
    ]
    found = [v for v in found if v is not None]
    if not found and name in analysis.runs:
        found = list(analysis.runs[name])
    return _distinct(found)


def protocol(analysis: Analysis) -> dict[str, Any]:
    """The study's trials per cell, epochs per run, subset (None: the whole training set) and
    what it held out for validation, in words (empty: nothing)."""
    trials = [s["trials"] for s in analysis.settings.values() if "trials" in s]
    if not trials:
        trials = [int(analysis.summary["runs"].max())]
    epochs = [int(float(e)) for e in _run_setting(analysis, "epochs")]
    if not epochs:
        epochs = [int(e) for e in analysis.summary["epochs"].dropna()] or [PAPER_EPOCHS]
    subsets = [int(float(v)) for v in _run_setting(analysis, "subset")]
    held = _distinct(analysis.summary["holdout"]) if "holdout" in analysis.summary else []
    if not held and tables.validated(analysis.summary):
        held = ["a split"]
    return {
        "trials": max(trials),
        "epochs": max(epochs),
        "subset": max(subsets, default=None),
        "validation": " or ".join(held),
    }


def _environments(runs: pd.DataFrame) -> list[dict[str, Any]]:
    if "environment" not in runs:
        return []
    out = []
    for text in runs["environment"].dropna():
        try:
            value = json.loads(text) if isinstance(text, str) else text
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _listed(values: list[str], none: str = "not recorded") -> str:
    return ", ".join(values) if values else none


def provenance(analysis: Analysis, source: str = "") -> list[tuple[str, str]]:
    """What was run, where and when, as (term, text) pairs for the report's first section."""
    runs, plan = analysis.runs, protocol(analysis)
    studies = _distinct(runs["study"]) if "study" in runs else list(analysis.settings)

    def grid(name: str, label: Any = str) -> str:
        return _listed([label(v) for v in _grid_values(analysis, name)])

    references = [
        f"{label(v)} = {v}"
        for name, label in (("datasets", dataset_label), ("models", model_label))
        for v in _grid_values(analysis, name)
        if label(v) != v and short_reference(v) != v
    ]
    envs = _environments(runs)
    env = {key: _distinct([e.get(key) for e in envs]) for key in {k for e in envs for k in e}}
    device = _listed(env.get("device_name") or env.get("device", []))
    subset = plan["subset"]
    items = [
        ("study", _listed(studies) + (f" in {source}" if source else "")),
        ("datasets", grid("datasets", dataset_label)),
        ("models", grid("models", model_label)),
        ("methods", grid("methods")),
        ("trials", f"{plan['trials']} per cell (seeds); the paper ran {PAPER_TRIALS}"),
        ("epochs", f"{plan['epochs']} per run; the paper ran {PAPER_EPOCHS}"),
        ("batch size", _listed(_run_setting(analysis, "batch_size"))),
        ("training images", f"the first {subset:,}" if subset else "all (no subset)"),
        ("schedule steps per", _listed(_run_setting(analysis, "step_per"))),
        ("validation", _validation_line(analysis)),
        *_tuning_items(analysis),
        *_budget_items(analysis),
        ("runs", _counts_line(analysis)),
        ("ran", _when(runs)),
        (
            "software",
            ", ".join(f"{k} {_listed(env.get(k, []))}" for k in ("annealbench", "torch", "python")),
        ),
        ("git revision", _listed([v[:12] for v in env.get("git_revision", [])])),
        (
            "hardware",
            f"{device}; threads {_listed(env.get('threads', []))}; "
            f"host {_listed(env.get('host', []))}",
        ),
    ]
    if references:
        items.insert(4, ("user references", "; ".join(references)))
    return items


def _tuning_items(analysis: Analysis) -> list[tuple[str, str]]:
    """The provenance line of a tuned study's search: its grid and budget."""
    lines = {study: tuned.budget_text(own) for study, own in analysis.settings.items()}
    lines = {study: text for study, text in lines.items() if text}
    if not lines:
        return []
    if len(lines) == 1:
        return [("tuning", next(iter(lines.values())))]
    return [("tuning", "; ".join(f"{study}: {text}" for study, text in lines.items()))]


def _budget_items(analysis: Analysis) -> list[tuple[str, str]]:
    """The shorter budgets every final trial also ran at (their section has the results;
    every other table holds the full budget)."""
    if analysis.budgets.empty:
        return []
    shown = ", ".join(f"{b:g}%" for b in sorted(set(analysis.budgets["budget"])))
    runs = int(analysis.budgets["n"].sum())
    return [("budgets", f"{shown} of the epochs ({runs} finished runs in all); the tables "
                        "below are of the full budget, 'Results against the training "
                        "budget' compares them")]  # fmt: skip


def _grid_values(analysis: Analysis, name: str) -> list[str]:
    """The studies' ``datasets``/``models``/``methods`` lists, else the runs' values."""
    listed = [v for s in analysis.settings.values() for v in s.get(name, [])]
    return _distinct(listed or list(analysis.runs[name[:-1]]))


def _compact(value: object) -> str:
    """A number or a list of numbers, short: ``[0.286]``, ``0.5``, ``(1, 28, 28)``."""
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_compact(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def data_table(analysis: Analysis) -> pd.DataFrame:
    """The user datasets the studies recorded (``settings["data"]``): one row each, with its
    short label and full reference, classes, input shape, sizes, normalization, fingerprint."""
    rows = []
    for settings in analysis.settings.values():
        recorded = settings.get("data")
        for ref, facts in (recorded if isinstance(recorded, dict) else {}).items():
            facts = facts if isinstance(facts, dict) else {}
            rows.append(
                {
                    "dataset": dataset_label(ref),
                    "reference": ref,
                    "classes": _compact(facts.get("num_classes")),
                    "input shape": _compact(facts.get("input_shape")),
                    "train": _compact(facts.get("train_size")),
                    "test": _compact(facts.get("test_size")),
                    "mean": _compact(facts.get("mean")),
                    "std": _compact(facts.get("std")),
                    "fingerprint": str(facts.get("fingerprint") or "")[:16],
                }
            )
    return pd.DataFrame(rows).drop_duplicates(ignore_index=True) if rows else pd.DataFrame()


def _fenced(text: str, info: str = "") -> list[str]:
    """A markdown code block holding ``text``, its fence longer than any backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip("\n"), fence]


def study_details(page: Page, analysis: Analysis) -> list[str]:
    """The user datasets' facts and each study's study file (``settings["source"]``) on
    ``page``, so the report shows what was run; returns the markdown lines."""
    markdown: list[str] = []
    facts = data_table(analysis)
    if not facts.empty:
        page.heading("User datasets", level=3)
        page.raw(tables.to_html(facts, index=False, css_class="results"))
        markdown += ["### User datasets", "", tables.to_markdown(facts, False), ""]
    for study, settings in analysis.settings.items():
        source = settings.get("source")
        if not isinstance(source, dict) or not source.get("text"):
            continue
        path = str(source.get("path") or "not recorded")
        heading = f"Study file of {study}" if len(analysis.settings) > 1 else "Study file"
        page.heading(heading, level=3)
        page.paragraph(f"{path}: the file the study was run from, as it was read.", "small")
        page.code(str(source["text"]))
        suffix = Path(path).suffix.lstrip(".")
        markdown += [f"### {heading}", "", f"`{path}`", "", *_fenced(source["text"], suffix), ""]
    return markdown


def _validation_line(analysis: Analysis) -> str:
    """What each study held out for validation, and so which protocol it follows."""
    held = {
        study: stats.holdout_text(validation_setting(settings))
        for study, settings in analysis.settings.items()
    }
    if not any(held.values()) and not tables.validated(analysis.summary):
        return f"none: the {stats.PAPER_PROTOCOL}"
    if len(held) > 1:
        return "; ".join(
            f"{study}: " + (f"{text} held out" if text else f"none ({stats.PAPER_PROTOCOL})")
            for study, text in held.items()
        )
    return stats.validation_protocol(next(iter(held.values()), ""))


def ranks_section(page: Page, analysis: Analysis) -> list[str]:
    """The section "Which method wins overall" on ``page``; returns its markdown lines."""
    page.heading("Which method wins overall")
    markdown: list[str] = []
    if analysis.ranks.empty:
        page.paragraph("No run has finished yet.")
    else:
        ranks = analysis.ranks.rename(columns={"mean_rank": "average rank"})
        markdown += ["## Average rank over all rows", ""]
        if tables.validated(analysis.summary):
            line = "Ranked by val ave where a row has a validation split, else by test ave."
            page.paragraph(line, "small")
            markdown += [line, ""]
        page.raw(tables.to_html(ranks, index=False, css_class="results sortable"))
        markdown += [tables.to_markdown(ranks, False), ""]
    if analysis.friedman:
        f = analysis.friedman
        line = (
            f"Friedman test over {f['rows']} rows where all {f['methods']} methods finished: "
            f"chi2 = {f['statistic']:.2f}, p = {f['p_value']:.3g}."
        )
    else:
        line = "Friedman test: not run (it needs 3 methods and 2 rows where all of them finished)."
    page.paragraph(line)
    return [*markdown, line, ""]


def _dashed(epochs: pd.DataFrame, dataset: str) -> str:
    """The accuracy caption's words for validation curves, when the dataset has them."""
    mine = epochs[epochs["dataset"] == dataset]
    if "val_acc" not in mine or not mine["val_acc"].notna().any():
        return ""
    return " (solid: test; dashed: validation, where the run held out a validation split)"


def _when(runs: pd.DataFrame) -> str:
    """First start and last finish of the runs (UTC timestamps as stored)."""
    started = runs["started_at"].dropna() if "started_at" in runs else pd.Series(dtype=object)
    finished = runs["finished_at"].dropna() if "finished_at" in runs else pd.Series(dtype=object)
    if started.empty and finished.empty:
        return "not recorded"
    first = min(started) if len(started) else "?"
    last = max(finished) if len(finished) else "not finished"
    return f"first run started {first}, last finished {last}"


def _counts_line(analysis: Analysis) -> str:
    counts = analysis.runs["status"].value_counts()
    parts = [
        f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed", "running", "pending")
    ]
    return f"{len(analysis.runs)} runs: " + ", ".join(p for p in parts if not p.startswith("0 "))


def write_report(
    analysis: Analysis,
    out: str | os.PathLike[str],
    *,
    source: str = "",
    schedule_epochs: int = 100,
) -> ReportFiles:
    """Write every report file into ``out`` (created if needed); return their paths.

    Any failure to write (a full disk, a folder made read-only meanwhile) is a ReportError.
    """
    folder = Path(out)
    check_writable(folder)
    try:
        return _write_all(analysis, folder, source, schedule_epochs)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ReportError(f"cannot write the report to {folder}: {reason}") from exc


def _write_all(analysis: Analysis, folder: Path, source: str, schedule_epochs: int) -> ReportFiles:
    writer = _ReportWriter(analysis, folder, source)
    writer.write_csvs()
    writer.front_matter()
    writer.written += tuned.section(
        writer.page, analysis, writer.markdown, writer.latex, writer.figure_folder
    )
    writer.written += budgets.section(
        writer.page, analysis, writer.markdown, writer.latex, writer.figure_folder
    )
    for dataset in analysis.datasets:
        writer.dataset_section(dataset)
    distance.section(writer.page, analysis, writer.markdown, writer.latex)
    writer.ranks_section()
    writer.schedules_section(schedule_epochs)
    writer.definitions()
    writer.closing_sections()
    return writer.finish()


def headline(page: Page, verdicts: pd.DataFrame, summary: pd.DataFrame | None = None) -> list[str]:
    """The section "Which method is best" on ``page``; returns its markdown lines.
    ``summary`` (the analysis') says which protocol each row follows."""
    page.heading("Which method is best", anchor="best")
    if verdicts.empty:
        page.paragraph("No run has finished yet: nothing to compare.")
        return []
    protocols = set(verdicts["protocol"]) if "protocol" in verdicts else {stats.PAPER}
    chosen = (
        "the highest mean validation score (its test numbers next to it)"
        if protocols == {stats.VALIDATION}
        else "the highest mean score"
    )
    if len(protocols) > 1:
        chosen = "the highest mean validation score where a row has a validation split, else "
        chosen += "the highest mean test score"
    text = (
        f"Per dataset and model: the method with {chosen}, its mean ± standard "
        "deviation [95% interval of the mean], and whether the paired tests against it "
        f"(Holm p < {stats.ALPHA}, at least {stats.MIN_TRIALS_TO_TEST} paired trials) "
        "separate it from the others. Click a column header to sort. "
    )
    text += tables.protocol_text(summary if summary is not None else verdicts)
    page.paragraph(text, "small")
    table = tables.verdict_table(verdicts)
    page.raw(tables.to_html(table, index=False, css_class="results sortable verdicts"))
    markdown = ["## Which method is best", "", text, "", tables.to_markdown(table, False), ""]
    weak = sorted({c for c in verdicts["caution"] if c})
    if weak:
        line = "Caution: " + " / ".join(weak) + "; treat the ranking as a hint, not a result."
        page.paragraph(line, "caution")
        markdown += [line, ""]
    if stats.PAPER in protocols:
        line = "Caution: " + stats.TEST_SELECTION_CAUTION + "."
        page.paragraph(line, "caution")
        markdown += [line, ""]
    return markdown


class _ReportWriter:
    """Builds the HTML page, the markdown and the LaTeX lists of the report section by section
    and records every file it writes."""

    def __init__(self, analysis: Analysis, folder: Path, source: str) -> None:
        self.analysis = analysis
        self.summary = analysis.summary
        self.folder = folder
        self.figure_folder = folder / "figures"
        self.figure_folder.mkdir(exist_ok=True)
        self.written: list[Path] = []
        self.source = source
        self.protocol = protocol(analysis)
        self.differences = protocol_differences(**self.protocol)
        runs = analysis.runs
        studies = _distinct(runs["study"]) if "study" in runs else list(analysis.settings)
        named = ", ".join(studies) or source
        self.title = "annealbench report" + (f": study {named}" if named else "")
        self.page = Page(self.title)
        self.markdown: list[str] = [f"# {self.title}", "", _counts_line(analysis), ""]
        self.latex: list[str] = [f"% {self.title}", "% needs \\usepackage{booktabs}", ""]

    def write_csvs(self) -> None:
        analysis, folder = self.analysis, self.folder
        _write_csv(folder / "summary.csv", self.summary[SUMMARY_COLUMNS], self.written)
        _write_csv(folder / "epochs.csv", analysis.epochs, self.written)
        _write_csv(folder / "scores.csv", analysis.scores, self.written)
        _write_csv(folder / "paired_tests.csv", analysis.tests, self.written)
        _write_csv(folder / "ranks.csv", analysis.ranks, self.written)
        _write_csv(folder / "missing.csv", analysis.missing, self.written)
        _write_csv(folder / "best.csv", analysis.verdicts, self.written)
        _write_csv(folder / "distance.csv", analysis.distance, self.written)
        _write_csv(folder / "orderings.csv", analysis.orderings, self.written)
        if not analysis.tuning.empty:
            _write_csv(folder / "tuning.csv", analysis.tuning, self.written)

    def front_matter(self) -> None:
        """What was run, then which method is best and how sure that is: the first screen."""
        page, analysis = self.page, self.analysis
        page.heading("What was run", anchor="provenance")
        facts = provenance(analysis, self.source)
        page.definitions(facts, "facts")
        page.paragraph(
            f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Published numbers: {CITATION}",
            "small",
        )
        self.markdown += ["## What was run", ""] + [f"- **{t}**: {d}" for t, d in facts] + [""]
        self.markdown += study_details(page, analysis)
        if self.differences:
            self.protocol_banner()
        if not analysis.missing.empty:
            n_missing = int(analysis.missing["missing"].sum())
            page.raw(
                f'<p class="note">This study is not finished: runs not done yet: {n_missing} '
                '(see <a href="#missing">missing runs</a>); every number below uses the finished '
                "runs only.</p>"
            )
        self.headline()

    def protocol_banner(self) -> None:
        text = (
            "Not the paper's protocol: " + "; ".join(self.differences) + ". The accuracies are "
            "not comparable with the paper's, so the differences from them are not shown."
        )
        self.page.paragraph(text, "banner")
        self.markdown += [f"**{text}**", ""]

    def headline(self) -> None:
        self.markdown += headline(self.page, self.analysis.verdicts, self.summary)

    def definitions(self) -> None:
        terms = definitions_for(self.summary)
        self.page.heading("Definitions")
        self.page.definitions(terms)
        self.markdown += ["## Definitions", ""] + [f"- **{t}**: {d}" for t, d in terms] + [""]

    def dataset_section(self, dataset: str) -> None:
        label = unique_labels(self.analysis.datasets, dataset_label)[dataset]
        anchor = "ds-" + "".join(ch for ch in dataset if ch.isalnum())
        self.page.heading(label, anchor=anchor)
        self.markdown += [f"## {label}", ""]
        self.paper_layout(dataset, anchor)
        self.cells(dataset)
        self.side_by_side(dataset, label, anchor)
        self.paired_tests(dataset)
        self.dataset_figures(dataset, label, anchor)

    def paper_layout(self, dataset: str, anchor: str) -> None:
        page, summary = self.page, self.summary
        caption = tables.dataset_caption(dataset, summary)
        legend = tables.legend(summary, dataset)
        page.heading("Accuracy in the paper's layout", level=3)
        page.paragraph(caption, "small")
        page.raw(tables.to_html(tables.paper_layout(summary, dataset, tables.HTML), escape=False))
        page.paragraph(legend.replace("`", ""), "legend")
        self.markdown += [
            caption,
            "",
            tables.paper_markdown(tables.paper_layout(summary, dataset, tables.MARKDOWN)),
            "",
            legend,
            "",
        ]
        self.latex.append(
            tables.to_latex(
                tables.paper_layout(summary, dataset, tables.LATEX),
                caption=caption + " " + legend.replace("`", ""),
                label=f"tab:{anchor}",
            )
        )

    def cells(self, dataset: str) -> None:
        table = tables.cells_table(self.summary, dataset)
        text = (
            "ave ± std and the 95% interval of the mean over the trials; caution: too few "
            f"trials (< {stats.MIN_TRIALS_TO_TEST}) to test, or runs far shorter than the "
            f"paper's {PAPER_EPOCHS} epochs (< {stats.MIN_EPOCH_FRACTION:.0%}). Click a column "
            "header to sort. " + tables.protocol_text(self.summary, dataset)
        )
        self.page.heading("Every cell with its uncertainty", level=3)
        self.page.paragraph(text, "small")
        self.page.raw(tables.to_html(table, index=False, css_class="results sortable"))
        self.markdown += ["### Every cell with its uncertainty", "", text, ""]
        self.markdown += [tables.to_markdown(table, False), ""]

    def side_by_side(self, dataset: str, label: str, anchor: str) -> None:
        page = self.page
        compare = tables.side_by_side(self.summary, dataset)
        page.heading("Ours next to the paper's", level=3)
        if compare.empty:
            page.paragraph("The paper reports no cell of this dataset that this store finished.")
            return
        if self.differences:
            page.paragraph(
                "Not comparable: this study ran " + "; ".join(self.differences) + ". The "
                "differences from the paper (Δ) are left out; summary.csv still holds them.",
                "banner",
            )
            compare = compare.drop(columns=["Δ ave", "Δ max"])
        else:
            page.paragraph(
                f"Δ = ours - paper's, in accuracy points; the same protocol as the paper "
                f"({PAPER_TRIALS} trials of {PAPER_EPOCHS} epochs on all training images).",
                "small",
            )
        page.raw(tables.to_html(compare, index=False, css_class="results sortable"))
        self.markdown += [
            "### Ours next to the paper's",
            "",
            tables.to_markdown(compare, False),
            "",
        ]
        self.latex.append(
            tables.to_latex(
                compare.rename(columns=lambda c: c.replace("Δ", "diff")),
                caption=f"{label}: our accuracy next to the paper's ({CITATION})",
                label=f"tab:{anchor}-paper",
                index=False,
                escape=True,
            )
        )

    def paired_tests(self, dataset: str) -> None:
        tests = self.analysis.tests
        mine = tests[tests["dataset"] == dataset]
        best_refs = set(mine.loc[mine["against"] == "best", "reference"])
        for against, heading in (("best", "the row's best method"), ("sig+", "sig+")):
            html_matrix = tables.tests_matrix(tests, dataset, against, tables.HTML)
            if html_matrix.empty:
                continue
            if against == "sig+" and best_refs == {"sig+"}:
                line = "sig+ is the best method of every row: its tests are the ones above."
                self.page.paragraph(line, "small")
                self.markdown += [line, ""]
                continue
            self.tests_against(dataset, against, heading, html_matrix)

    def tests_against(
        self, dataset: str, against: str, heading: str, html_matrix: pd.DataFrame
    ) -> None:
        page, tests = self.page, self.analysis.tests
        text = (
            f"Paired tests against {heading}: mean difference (method - reference) over "
            "paired trials and Holm-adjusted p; bold = significant at 0.05; n = pairs when "
            "too few to test."
        )
        if tables.validated(self.summary, dataset):
            text += (
                " The differences are of test scores; the row's best is the method selected "
                "on validation (highest val ave). " + tables.protocol_text(self.summary, dataset)
            )
        page.heading(f"Paired tests against {heading}", level=3)
        page.paragraph(text, "small")
        page.raw(tables.to_html(html_matrix, escape=False, css_class="results sortable"))
        md_matrix = tables.tests_matrix(tests, dataset, against, tables.MARKDOWN)
        self.markdown += [f"### Paired tests against {heading}", "", text, ""]
        self.markdown += [tables.to_markdown(md_matrix), ""]
        weak = stats.unreachable_families(tests)
        weak = weak[(weak["dataset"] == dataset) & (weak["against"] == against)]
        if not weak.empty:
            worst = weak.iloc[0]
            note = (
                f"Too few trials for a Wilcoxon comparison to be significant in {len(weak)} "
                f"row(s): with {int(worst['pairs'])} pairs its smallest p is "
                f"{worst['smallest_p']:.3g}, and Holm over {int(worst['comparisons'])} such "
                f"comparisons needs p < {stats.ALPHA / worst['comparisons']:.3g}; "
                "run more seeds."
            )
            page.paragraph(note, "note")
            self.markdown += [note, ""]

    def _figure(self, figure: Figure, name: str, alt: str, caption: str) -> None:
        png = figures.save(figure, self.figure_folder, name)
        self.written += png[:2]
        self.page.figure(png[2], alt, caption)

    def dataset_figures(self, dataset: str, label: str, anchor: str) -> None:
        done = self.analysis.done_epochs
        if not (done["dataset"] == dataset).any():
            self.page.paragraph("No run of this dataset has finished yet: no curves to draw.")
            return
        # Each method's definition (user methods' from their stored configs), so panels are
        # labelled by what they hold and rates drawn from the schedule itself.
        methods = figures.method_definitions(self.analysis.runs)
        rows = "; ".join(
            f"{title}: {', '.join(names)}"
            for title, names in figures.panel_rows(done, dataset, methods)
        )
        self._figure(
            figures.accuracy_figure(done, dataset, methods),
            f"accuracy_{anchor[3:]}",
            f"{label} accuracy over epochs",
            f"{label}: test accuracy over epochs, mean over finished trials with a band of "
            f"one standard deviation{_dashed(done, dataset)}; every point is inside the axes. "
            f"Panels: {rows}.",
        )
        self._figure(
            figures.loss_figure(done, dataset),
            f"loss_{anchor[3:]}",
            f"{label} training and test loss over epochs",
            f"{label}: training loss (top) and test loss (bottom) per sample over epochs, mean "
            "over finished trials with a band of one standard deviation.",
        )
        if done.loc[done["dataset"] == dataset, "lr"].notna().any():
            self._figure(
                figures.lr_figure(done, dataset, methods),
                f"lr_{anchor[3:]}",
                f"{label} learning rates used",
                f"{label}: lines: each method's schedule over the run, evaluated at 1001 "
                "points, so a warmup shows; dots: the stored rate of each epoch's last update. "
                "rms and adam run at the base rate of their optimizer.",
            )

    def ranks_section(self) -> None:
        self.markdown += ranks_section(self.page, self.analysis)

    def schedules_section(self, schedule_epochs: int) -> None:
        self.page.heading("Figure 1: the schedules")
        self._figure(
            figures.schedules_figure(schedule_epochs),
            "schedules",
            "learning-rate schedules",
            figures.schedules_caption(schedule_epochs),
        )

    def closing_sections(self) -> None:
        page, missing = self.page, self.analysis.missing
        page.heading("Missing runs", anchor="missing")
        if missing.empty:
            page.paragraph("None: every run in the store is done or diverged.")
        else:
            page.raw(tables.to_html(missing, index=False, css_class="results sortable"))
            self.markdown += ["## Missing runs", "", tables.to_markdown(missing, False), ""]
        page.heading("Files")
        page.paragraph(
            "summary.csv (one row per cell), scores.csv (one row per finished run), epochs.csv "
            "(one row per run and epoch, every status), paired_tests.csv, ranks.csv, "
            "missing.csv, best.csv (the best method of each row), distance.csv and "
            "orderings.csv (the distance to the paper), "
            + (
                "tuning.csv (the search: per method and scale) "
                if len(self.analysis.tuning)
                else ""
            )
            + "tables.md, tables.tex, figures/*.png and *.pdf, next to this page."
        )
        self.markdown += [f"Published numbers: {CITATION}", ""]

    def finish(self) -> ReportFiles:
        """Write tables.md, tables.tex and report.html; return every path written."""
        folder = self.folder
        _write_text(folder / "tables.md", "\n".join(self.markdown), self.written)
        _write_text(folder / "tables.tex", "\n\n".join(self.latex), self.written)
        html_path = folder / "report.html"
        _write_text(html_path, self.page.render(), self.written)
        return ReportFiles(folder=folder, html=html_path, files=self.written)


def _read_source(path: Path, study: str | None, names_wanted: list[str] | None) -> list[tuple]:
    """(label, runs, epochs, settings) for each study of one store to report."""
    from annealbench.store import Store

    if not path.exists():
        raise ReportError(f"no results store at {path}; run `annealbench run` first")
    if path.is_dir():
        raise ReportError(f"{path} is a folder, not a results store file")
    with Store(path, readonly=True) as handle:
        names = handle.study_names()
        wanted = names_wanted if names_wanted else ([study] if study else names)
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ReportError(
                f"no study {missing[0]!r} in {path}; studies there: {names or 'none'}"
            )
        if not names_wanted and study is None and len(names) > 1:
            raise ReportError(
                f"{path} holds several studies ({', '.join(names)}); pass --study NAME "
                "(repeat it to report several side by side)"
            )
        return [
            (
                name,
                handle.runs_frame(name),
                handle.epochs_frame(name),
                handle.study_settings(name),
                _search_of(handle, name),
            )
            for name in wanted
        ]


def _search_of(handle: Any, name: str) -> pd.DataFrame:
    """A tuned study's search runs with their validation scores (empty when untuned)."""
    if not handle.study_settings(name).get("tune"):
        return pd.DataFrame(columns=tuned.SEARCH_COLUMNS)
    runs = handle.runs_frame(name, tuning=True)
    return tuned.search_scores(runs, handle.epochs_frame(name, tuning=True), name)


def load_analysis(
    store: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    study: str | Sequence[str] | None = None,
) -> Analysis:
    """The :class:`Analysis` of one or several stores (read-only), without writing anything:
    per-run scores, per-cell summary, paired tests, ranks and verdicts as DataFrames, each
    study's validation split read from its settings. ``store`` and ``study`` as in
    :func:`report_store`. Raises :class:`ReportError` (or the store's ``StoreError``)."""
    paths = [Path(store)] if isinstance(store, (str, os.PathLike)) else [Path(s) for s in store]
    many = None if study is None or isinstance(study, str) else list(study)
    one = study if isinstance(study, str) else None
    sources = [(path, *item) for path in paths for item in _read_source(path, one, many)]
    if all(runs.empty for _, _, runs, _, _, _ in sources):
        where = ", ".join(str(p) for p in paths)
        raise ReportError(f"the store {where} holds no runs; run `annealbench run` first")
    # The stores are closed: only the output folder is written.
    runs, epochs, settings, search = _side_by_side(sources)
    return analyze(runs, epochs, settings, search)


def report_store(
    store: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    study: str | Sequence[str] | None = None,
) -> ReportFiles:
    """Read one or several results stores (read-only) and write their report into ``out``.

    ``study`` names one study, or several (a list) to report side by side; with several
    stores each store's studies are reported. When more than one study is reported, each
    row of the tables and each column of the figures is a model *of a study*: ``nn2
    (quick)``, ``nn2 (long)``. Raises :class:`ReportError` (or the store's ``StoreError``).
    """
    paths = [Path(store)] if isinstance(store, (str, os.PathLike)) else [Path(s) for s in store]
    analysis = load_analysis(paths, study)
    return write_report(analysis, out, source=", ".join(str(p) for p in paths))


def _side_by_side(sources: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """One runs, one epochs and one search frame; with several studies, models are labelled
    by study."""
    labels = [name for _, name, *_ in sources]
    clash = len(set(labels)) < len(labels)
    runs_all, epochs_all, searches, settings, offset = [], [], [], {}, 0
    for path, name, runs, epochs, study_settings, search in sources:
        label = f"{name}@{path.stem}" if clash else name
        runs, epochs, search = runs.copy(), epochs.copy(), search.copy()
        search["study"] = label
        runs["study"] = label  # the key of its settings: each row finds its study's protocol
        runs["run_id"] += offset  # run ids are per store: keep them apart
        epochs["run_id"] += offset
        offset = int(runs["run_id"].max()) + 1 if not runs.empty else offset
        if len(sources) > 1:
            runs["model"] = runs["model"].astype(str) + f" ({label})"
            epochs["model"] = epochs["model"].astype(str) + f" ({label})"
            search["model"] = search["model"].astype(str) + f" ({label})"
        searches.append(search)
        runs_all.append(runs)
        epochs_all.append(epochs)
        settings[label] = study_settings
    return (
        pd.concat(runs_all, ignore_index=True),
        pd.concat(epochs_all, ignore_index=True),
        settings,
        tuned.concat(searches),
    )
