"""Scores, per-cell summaries and paired tests: pure functions over the store's DataFrames.

Definitions (stated in the report too):

- a run's **score** is its mean test accuracy over the last 10% of its epochs (at least one);
- a cell (dataset, model, method) aggregates its finished trials ("done" runs): ``ave`` = mean
  score, ``max`` = best trial's score, ``peak`` = best single-epoch test accuracy of any trial,
  ``std`` = sample standard deviation of the scores (ddof=1), ``ci_low``/``ci_high`` = 95%
  confidence interval of the mean score from the t-distribution with trials-1 degrees of freedom;
- diverged runs are counted, never averaged in; runs not finished yet are counted as missing.

Two protocols, per row (dataset, model):

- the **paper protocol** (no validation split): the row's best method is the one with the
  highest ``ave``: selected and reported on the test set;
- the **validation protocol** (every finished run of the row has validation accuracies): a
  run's ``val_score`` is its mean validation accuracy over the last 10% of its epochs, its
  ``best_val_epoch`` the (first) epoch of its best validation accuracy and
  ``test_at_best_val`` the test accuracy at that epoch. The row's best method is the one with
  the highest ``val_ave`` (mean ``val_score``); ``ave``/``max``/``std``/CI and the paired tests
  stay on the test scores, so the test set is only reported, never selected on.

``selection`` (per cell) is the number a row's best is chosen by: ``val_ave`` or ``ave``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from annealbench.report.paper import (
    PAPER_EPOCHS,
    PAPER_TRIALS,
    attach_paper,
    order_datasets,
    order_methods,
    order_models,
    protocol_differences,
)
from annealbench.training.config import SCORE_FRACTION, last_epochs

CONFIDENCE = 0.95
ALPHA = 0.05
MIN_WILCOXON_PAIRS = 6
# Fewer paired trials than this: a test's p-value rests on an assumption (normal differences)
# that so few trials cannot check, and the Wilcoxon test cannot reach 0.05 below 6 pairs.
MIN_TRIALS_TO_TEST = 5
# Runs shorter than this fraction of the paper's 100 epochs: the schedules' shapes (a warmup,
# a sigmoid's knee) are squeezed into a few epochs and the accuracies are far from converged.
MIN_EPOCH_FRACTION = 0.1
DONE = "done"
DIVERGED = "diverged"
PAPER = "paper"
VALIDATION = "validation"
PAPER_PROTOCOL = "paper protocol: selected and reported on the test set"
TEST_SELECTION_CAUTION = (
    "no validation split (the paper's protocol): choosing a schedule by these numbers tunes it "
    "on the test set, so they overstate how well it does on new data; hold out a validation "
    "split (the study's run.validation) to select on it"
)
#: Per-run columns of :func:`run_scores` beside the test ones (NaN without validation).
VALIDATION_RUN_COLUMNS = ["val_score", "val_peak", "best_val_epoch", "test_at_best_val"]

ROW = ["dataset", "model"]
CELL = ["dataset", "model", "method"]
RUN_KEY = ["dataset", "model", "method", "seed"]


def validation_protocol(holdout: str = "") -> str:
    """The validation protocol in words; ``holdout`` says what was held out
    (``"5,000 examples"``), empty when not known."""
    held = f"{holdout} held out" if holdout else "a split of the training set held out"
    return (
        f"validation protocol: selected on validation ({held}), "
        "test reported at the selected points"
    )


def holdout_text(validation: object) -> str:
    """What a study's ``run.validation`` holds out, in words: ``5,000 examples`` for an int,
    ``10% of the training set`` for a fraction; empty for none."""
    if validation is None or isinstance(validation, bool):
        return ""
    try:
        value = float(validation)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(validation)
    if value <= 0 or not math.isfinite(value):
        return ""
    if value < 1:
        return f"{100 * value:.3g}% of the training set"
    return f"{int(value):,} examples"


def _curve_scores(curve: pd.DataFrame, fraction: float) -> tuple:
    """(epochs, score, peak, final, val_score, val_peak, best_val_epoch, test_at_best_val) of
    one run's epochs, sorted by epoch."""
    acc = curve["test_acc"].to_numpy(dtype=float)
    n = last_epochs(len(acc), fraction)
    test = (len(acc), acc[-n:].mean(), acc.max(), acc[-1])
    if "val_acc" not in curve:
        return (*test, math.nan, math.nan, math.nan, math.nan)
    val = curve["val_acc"].to_numpy(dtype=float)
    finite = np.isfinite(val)
    if not finite.any():
        return (*test, math.nan, math.nan, math.nan, math.nan)
    tail = val[-n:][finite[-n:]]
    best = int(np.flatnonzero(finite)[np.argmax(val[finite])])  # the first best epoch
    epoch = float(curve["epoch"].iloc[best])
    return (*test, tail.mean() if tail.size else math.nan, val[best], epoch, acc[best])


def run_scores(
    runs: pd.DataFrame, epochs: pd.DataFrame, fraction: float = SCORE_FRACTION
) -> pd.DataFrame:
    """One row per finished ("done") run: its key, test score, peak, final and epoch count,
    and (NaN without validation) ``val_score``, ``val_peak``, ``best_val_epoch`` and
    ``test_at_best_val``.

    ``runs`` needs run_id, dataset, model, method, seed, status; ``epochs`` needs run_id, epoch,
    test_acc (and val_acc for the validation columns). A "done" run without epochs is an
    inconsistent store and raises ValueError.
    """
    done = runs.loc[runs["status"] == DONE, ["run_id", *RUN_KEY]]
    duplicated = done.duplicated(RUN_KEY, keep=False)
    if duplicated.any():
        first = done.loc[duplicated, RUN_KEY].iloc[0].to_dict()
        raise ValueError(
            f"two finished runs share dataset, model, method and seed ({first}); "
            "report one study at a time"
        )
    measures = ["epochs", "score", "peak", "final", *VALIDATION_RUN_COLUMNS]
    columns = [*RUN_KEY, "run_id", *measures]
    if done.empty:
        return pd.DataFrame(columns=columns)
    wanted = ["run_id", "epoch", "test_acc"] + (["val_acc"] if "val_acc" in epochs else [])
    curves = epochs.loc[epochs["run_id"].isin(done["run_id"]), wanted]
    rows = [
        (run_id, *_curve_scores(curve, fraction))
        for run_id, curve in curves.sort_values(["run_id", "epoch"]).groupby("run_id", sort=False)
    ]
    per_run = pd.DataFrame(rows, columns=["run_id", *measures])
    missing = set(done["run_id"]) - set(per_run["run_id"])
    if missing:
        raise ValueError(f"finished runs without any epoch recorded: {sorted(missing)[:5]}")
    return done.merge(per_run, on="run_id")[columns]


def _ci(scores: pd.Series) -> tuple[float, float]:
    n = len(scores)
    if n < 2:
        return (math.nan, math.nan)
    sem = scores.std(ddof=1) / math.sqrt(n)
    if sem == 0:  # identical trials: the interval collapses to the mean
        return (float(scores.mean()), float(scores.mean()))
    low, high = stats.t.interval(CONFIDENCE, df=n - 1, loc=scores.mean(), scale=sem)
    return (float(low), float(high))


def cautions(trials: int, epochs: int | None = None) -> list[str]:
    """Why a cell or a comparison is weak evidence, in words next to its number.

    ``trials``: finished trials (or paired trials) behind it; ``epochs``: of its runs. Empty
    when neither is below :data:`MIN_TRIALS_TO_TEST` or :data:`MIN_EPOCH_FRACTION` of the
    paper's epochs.
    """
    out = []
    if trials < MIN_TRIALS_TO_TEST:
        out.append(f"{trials} trial{'' if trials == 1 else 's'}: too few to test")
    if epochs is not None and epochs < MIN_EPOCH_FRACTION * PAPER_EPOCHS:
        out.append(
            f"{epochs} epoch{'' if epochs == 1 else 's'}: far from the paper's {PAPER_EPOCHS}"
        )
    return out


def interval_text(cell: pd.Series | dict, digits: int = 2) -> str:
    """``90.12 ± 0.15 [89.90, 90.34]``: ave, std and the 95% interval of one summary row
    (std and interval left out when undefined, with one trial)."""
    text = f"{cell['ave']:.{digits}f}"
    if not pd.isna(cell["std"]):
        text += f" ± {cell['std']:.{digits}f}"
    if not pd.isna(cell["ci_low"]):
        text += f" [{cell['ci_low']:.{digits}f}, {cell['ci_high']:.{digits}f}]"
    return text


def status_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell: ``runs`` (all), ``trials`` (done), ``diverged``, ``missing`` (any other status)
    and ``missing_detail`` (e.g. ``"2 running, 3 pending"``)."""
    if runs.empty:
        return pd.DataFrame(
            columns=[*CELL, "runs", "trials", "diverged", "missing", "missing_detail"]
        )
    counts = runs.groupby([*CELL, "status"]).size().unstack("status", fill_value=0)
    out = pd.DataFrame(index=counts.index)
    out["runs"] = counts.sum(axis=1)
    out["trials"] = counts.get(DONE, 0)
    out["diverged"] = counts.get(DIVERGED, 0)
    out["missing"] = out["runs"] - out["trials"] - out["diverged"]
    others = [s for s in counts.columns if s not in (DONE, DIVERGED)]
    out["missing_detail"] = [
        ", ".join(f"{row[s]} {s}" for s in others if row[s]) for _, row in counts.iterrows()
    ]
    return out.reset_index()


def _aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    """Per cell of ``scores``: the test statistics, then the validation ones."""
    grouped = scores.groupby(CELL)
    agg = pd.DataFrame(
        {
            "ave": grouped["score"].mean(),
            "max": grouped["score"].max(),
            "peak": grouped["peak"].max(),
            "std": grouped["score"].std(ddof=1),
            "epochs": grouped["epochs"].max(),
        }
    )
    if not agg.empty:
        intervals = grouped["score"].apply(_ci)
        agg["ci_low"] = [low for low, _ in intervals]
        agg["ci_high"] = [high for _, high in intervals]
    else:
        agg["ci_low"] = agg["ci_high"] = pd.Series(dtype=float)
    for column in VALIDATION_RUN_COLUMNS:
        if column not in scores:
            scores = scores.assign(**{column: math.nan})
    grouped = scores.groupby(CELL)
    agg["val_ave"] = grouped["val_score"].mean()
    agg["val_max"] = grouped["val_score"].max()
    agg["val_std"] = grouped["val_score"].std(ddof=1)
    agg["test_at_best_val_ave"] = grouped["test_at_best_val"].mean()
    agg["test_at_best_val_std"] = grouped["test_at_best_val"].std(ddof=1)
    return agg


def row_protocols(scores: pd.DataFrame) -> pd.Series:
    """Per row (dataset, model) with finished runs: :data:`VALIDATION` when every finished run
    of the row has a validation score, else :data:`PAPER`."""
    if scores.empty:
        empty = pd.MultiIndex.from_tuples([], names=ROW)
        return pd.Series(dtype=object, index=empty, name="protocol")
    has = scores["val_score"].notna() if "val_score" in scores else pd.Series(False, scores.index)
    every = has.groupby([scores["dataset"], scores["model"]]).all()
    return every.map({True: VALIDATION, False: PAPER}).rename("protocol")


def summarize(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per cell in ``runs``: status counts, ave, max, peak, std, CI, the validation
    statistics, the row's ``protocol``, ``selection`` (the number the row's best is chosen
    by), ``selected`` (the row's best), ``study`` and ``base_model`` (:func:`with_studies`)
    and the paper's numbers (matched by ``base_model``, so side by side too).

    Statistics use only finished trials; a cell with none has NaN statistics.
    """
    counts = status_counts(runs)
    summary = counts.merge(_aggregate(scores).reset_index(), on=CELL, how="left")
    summary = summary.merge(row_protocols(scores).reset_index(), on=ROW, how="left")
    summary["protocol"] = summary["protocol"].fillna(PAPER)
    validated = summary["protocol"] == VALIDATION
    summary["selection"] = summary["ave"].where(~validated, summary["val_ave"])
    summary = attach_paper(with_studies(summary, runs), model_column="base_model")
    summary["diff_ave"] = summary["ave"] - summary["paper_ave"]
    summary["diff_max"] = summary["max"] - summary["paper_max"]
    summary = sort_cells(summary).reset_index(drop=True)
    summary["selected"] = False
    for _, cells in summary[summary["trials"] > 0].groupby(ROW, sort=False):
        summary.loc[best_cell(cells).name, "selected"] = True
    return summary


def base_model(model: str, study: str) -> str:
    """The model of a row: ``nn2`` of ``nn2 (quick)``, the side-by-side label of study
    ``quick``'s nn2 rows; any other name as it is."""
    suffix = f" ({study})"
    return model[: -len(suffix)] if study and model.endswith(suffix) else model


def with_studies(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``study`` (the study of the cell's runs; empty when not recorded) and
    ``base_model`` (:func:`base_model`: the model without a side-by-side study label)."""
    out = summary.drop(columns=["study", "base_model"], errors="ignore")
    if "study" in runs and not runs.empty:
        studies = runs.groupby(CELL)["study"].first().rename("study").reset_index()
        out = out.merge(studies, on=CELL, how="left")
        out["study"] = out["study"].fillna("").astype(str)
    else:
        out["study"] = ""
    out["base_model"] = [
        base_model(str(m), s) for m, s in zip(out["model"], out["study"], strict=True)
    ]
    return out


def selection_column(summary: pd.DataFrame) -> str:
    """The column a row's best is chosen by: ``selection``, or ``ave`` in an older summary."""
    return "selection" if "selection" in summary else "ave"


def best_cell(cells: pd.DataFrame) -> pd.Series:
    """The best finished cell of one row: the highest ``selection`` (the first of ties, in the
    paper's order)."""
    return cells.loc[cells[selection_column(cells)].idxmax()]


def sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's order of datasets, models and methods."""
    keys = {
        "dataset": order_datasets(frame["dataset"]),
        "model": order_models(frame["model"]),
        "method": order_methods(frame["method"]) if "method" in frame else [],
    }
    position = {col: {v: i for i, v in enumerate(vals)} for col, vals in keys.items()}
    by = [c for c in ("dataset", "model", "method") if c in frame]
    return frame.sort_values(by, key=lambda col: col.map(position[col.name]), kind="stable")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return adjusted
    order = finite[np.argsort(p[finite], kind="stable")]
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def paired_test(x: np.ndarray, y: np.ndarray) -> tuple[str, float, float]:
    """Two-sided paired test of x against y: (test name, statistic, p-value).

    Wilcoxon signed-rank with at least 6 pairs (the fewest for which it can reach p < 0.05),
    a paired t-test with 2 to 5; ``none`` with fewer. Identical samples give p = 1; the same
    non-zero difference on every pair gives the t-test's limit, p = 0.
    """
    n = len(x)
    diff = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if n < 2:
        return ("none", math.nan, math.nan)
    name = "wilcoxon" if n >= MIN_WILCOXON_PAIRS else "t-test"
    if np.all(diff == 0):
        return (name, 0.0, 1.0)
    if name == "t-test" and np.ptp(diff) == 0:  # the same gain on every seed: t is infinite
        return (name, math.copysign(math.inf, diff[0]), 0.0)
    result = stats.wilcoxon(x, y) if name == "wilcoxon" else stats.ttest_rel(x, y)
    return (name, float(result.statistic), float(result.pvalue))


def smallest_wilcoxon_p(pairs: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with
    ``pairs`` pairs (all differences one sign, no ties): 2 / 2**pairs."""
    return 2.0 / 2.0**pairs


def unreachable_families(tests: pd.DataFrame) -> pd.DataFrame:
    """Families (row, reference) whose Wilcoxon comparisons cannot be significant after Holm.

    Each of the ``comparisons`` Wilcoxon p-values is multiplied by at least ``comparisons`` in
    Holm's procedure (tests of other kinds may come first), so when ``smallest_p`` (for the most
    pairs in the family) times that count reaches ``ALPHA`` none can pass. More seeds fix it.
    """
    columns = [*ROW, "against", "pairs", "comparisons", "smallest_p"]
    wilcoxon = tests[(tests["test"] == "wilcoxon") & tests["p_value"].notna()]
    if wilcoxon.empty:
        return pd.DataFrame(columns=columns)
    out = wilcoxon.groupby([*ROW, "against"], sort=False).agg(
        pairs=("pairs", "max"), comparisons=("p_value", "size")
    )
    out["smallest_p"] = out["pairs"].map(smallest_wilcoxon_p)
    out = out[out["smallest_p"] * out["comparisons"] >= ALPHA]
    return out.reset_index()[columns]


def paired_tests(
    summary: pd.DataFrame, scores: pd.DataFrame, references: Sequence[str] = ("best", "sig+")
) -> pd.DataFrame:
    """Every method of each row against the row's best method (:func:`best_cell`: highest
    ``val_ave`` under the validation protocol, else highest ``ave``) and against sig+.

    Trials are paired by seed (same seed = same initial weights and batch order); only seeds
    finished by both methods count. ``diff`` = mean(method - reference) of the test scores
    over the pairs (the test set is what is reported, whichever protocol chose the best).
    p-values are Holm-corrected within each family (one row, one reference).
    """
    columns = [
        *ROW,
        "against",
        "reference",
        "method",
        "pairs",
        "diff",
        "test",
        "statistic",
        "p_value",
        "p_holm",
        "significant",
    ]
    rows = []
    done = summary[summary["trials"] > 0]
    for (dataset, model), cells in done.groupby(ROW, sort=False):
        row_scores = scores[(scores["dataset"] == dataset) & (scores["model"] == model)]
        by_seed = row_scores.pivot(index="seed", columns="method", values="score")
        best = best_cell(cells)["method"]
        for against in references:
            reference = best if against == "best" else against
            if reference not in by_seed:
                continue
            family = []
            for method in order_methods(cells["method"]):
                if method == reference:
                    continue
                pair = by_seed[[method, reference]].dropna()
                test, statistic, p = paired_test(
                    pair[method].to_numpy(), pair[reference].to_numpy()
                )
                diff = float((pair[method] - pair[reference]).mean()) if len(pair) else math.nan
                family.append(
                    [
                        dataset,
                        model,
                        against,
                        reference,
                        method,
                        len(pair),
                        diff,
                        test,
                        statistic,
                        p,
                    ]
                )
            adjusted = holm([r[-1] for r in family])
            for r, p_adj in zip(family, adjusted, strict=True):
                rows.append([*r, p_adj, bool(p_adj < ALPHA)])
    return pd.DataFrame(rows, columns=columns)


def average_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean rank by ``selection`` (``val_ave`` under the validation protocol,
    else ``ave``) over the rows (dataset, model) where it finished.

    Rank 1 is the best; ties share the mean of their ranks. ``wins`` counts rows where the method
    ranks first (shared firsts included).
    """
    done = summary[summary["trials"] > 0].copy()
    columns = ["method", "rows", "mean_rank", "wins"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    by = selection_column(done)
    done["rank"] = done.groupby(ROW)[by].rank(ascending=False, method="min")
    done["mean_of_ranks"] = done.groupby(ROW)[by].rank(ascending=False, method="average")
    ranks = done.groupby("method").agg(
        rows=("mean_of_ranks", "size"),
        mean_rank=("mean_of_ranks", "mean"),
        wins=("rank", lambda r: int((r == 1).sum())),
    )
    ranks = ranks.reset_index().sort_values(["mean_rank", "method"], kind="stable")
    return ranks[columns].reset_index(drop=True)


def friedman(summary: pd.DataFrame) -> dict[str, float | int] | None:
    """Friedman test that all methods rank alike (by ``selection``), over the rows where every
    method finished.

    None when it cannot be run (fewer than 3 methods or 2 complete rows).
    """
    done = summary[summary["trials"] > 0]
    table = done.pivot_table(index=ROW, columns="method", values=selection_column(done))
    table = table.dropna()
    if table.shape[1] < 3 or table.shape[0] < 2:
        return None
    result = stats.friedmanchisquare(*(table[c].to_numpy() for c in table.columns))
    return {
        "rows": int(table.shape[0]),
        "methods": int(table.shape[1]),
        "statistic": float(result.statistic),
        "p_value": float(result.pvalue),
    }


def missing_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """Cells with runs not finished (pending, running, failed...): the partial-store view."""
    cols = [*CELL, "runs", "trials", "diverged", "missing", "missing_detail"]
    return summary.loc[summary["missing"] > 0, cols].reset_index(drop=True)


def _spread_text(cell: pd.Series, prefix: str, digits: int = 2) -> str:
    """``90.12 ± 0.15``: the mean and std of a validation column pair (blank without)."""
    mean, std = cell.get(f"{prefix}_ave", math.nan), cell.get(f"{prefix}_std", math.nan)
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def _verdict_text(cells: pd.DataFrame, best: pd.Series, mine: pd.DataFrame) -> tuple:
    """(verdict in words, beaten, tied, better) of one row from its tests against the best."""
    solid = mine["significant"].astype(bool) & (mine["pairs"] >= MIN_TRIALS_TO_TEST)
    beaten = list(mine.loc[solid & (mine["diff"] <= 0), "method"])
    better = list(mine.loc[solid & (mine["diff"] > 0), "method"])
    tied = mine[~solid]
    trials = int(best["trials"])
    validated = best.get("protocol") == VALIDATION
    if len(cells) == 1:
        verdict = "the only method of this row"
    elif trials < MIN_TRIALS_TO_TEST:
        highest = "highest mean validation score" if validated else "highest mean"
        verdict = f"{highest}, but {trials} trials are too few to say it beats the others"
    elif tied.empty and not better:
        verdict = f"significantly better than all {len(beaten)} others (Holm p < {ALPHA})"
    elif tied.empty:
        verdict = f"significantly better than {len(beaten)} other(s) (Holm p < {ALPHA})"
    else:
        runner = tied.iloc[0]
        verdict = (
            f"not significantly better than {', '.join(tied['method'])} "
            f"(runner-up {runner['method']}: {runner['diff']:+.2f} points, "
            f"p = {runner['p_holm']:.3g}); better than {len(beaten)} other(s)"
        )
    if better and trials >= MIN_TRIALS_TO_TEST:
        verdict += f"; yet on the test set {', '.join(better)} did significantly better" + (
            " (the choice on validation did not carry over)" if validated else ""
        )
    return verdict, beaten, tied, better


def verdicts(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model): the best method (:func:`best_cell`: by ``val_ave`` under
    the validation protocol, else by ``ave``), its test ave ± std [95% CI], and how certain
    that is, in words, from the paired tests (on the test scores) against it.

    ``beaten``: methods significantly worse (Holm p < 0.05) on at least
    :data:`MIN_TRIALS_TO_TEST` pairs; ``better``: significantly better on the test set (a
    choice on validation that did not carry over); ``tied``: the others, with the runner-up
    and its difference first. ``caution``: too few trials or too short runs
    (:func:`cautions`). ``protocol``, ``val_score`` (the best's val ave ± std) and
    ``test_at_best_val`` (its test accuracy at the epochs of best validation accuracy, mean
    ± std) describe the selection; both texts are blank under the paper protocol.
    """
    columns = [*ROW, "best", "score", "trials", "epochs", "beaten", "tied", "verdict", "caution"]
    columns += ["protocol", "val_score", "test_at_best_val", "better"]
    rows = []
    for (dataset, model), cells in summary[summary["trials"] > 0].groupby(ROW, sort=False):
        best = best_cell(cells)
        mine = tests[
            (tests["dataset"] == dataset) & (tests["model"] == model) & (tests["against"] == "best")
        ].sort_values("diff", ascending=False)
        verdict, beaten, tied, better = _verdict_text(cells, best, mine)
        trials, epochs = int(best["trials"]), int(best["epochs"])
        rows.append(
            [dataset, model, best["method"], interval_text(best), trials, epochs]
            + [", ".join(beaten), ", ".join(tied["method"]), verdict]
            + ["; ".join(cautions(trials, epochs)), best.get("protocol", PAPER)]
            + [_spread_text(best, "val"), _spread_text(best, "test_at_best_val"), ", ".join(better)]
        )
    return pd.DataFrame(rows, columns=columns)


# -- the distance to the paper -------------------------------------------------------------

#: A cell is "within" the paper when |ours - paper's ave| is at most this many points; the paper
#: claims "A beats B" in a row when A's ave exceeds B's by more than :data:`ORDERING_MARGIN`.
WITHIN_POINTS = 0.5
ORDERING_MARGIN = 0.5
MIN_SPEARMAN_METHODS = 3
_TOLERANCE = 1e-9  # the paper's two decimals: 0.50 is 0.5, not 0.5000000000001
DISTANCE_COLUMNS = [
    "study",
    "dataset",
    "model",
    "cells",
    "mad",
    "within_0_5",
    "spearman",
    "orderings",
    "orderings_hold",
    "orderings_separated",
    "trials",
    "epochs",
    "protocol_differs",
    "note",
]
ORDERING_COLUMNS = [
    "study",
    "dataset",
    "model",
    "better",
    "worse",
    "paper_diff",
    "our_diff",
    "holds",
    "pairs",
    "test",
    "p_holm",
    "separated",
    "separation",
]
DISTANCE_DEFINITION = (
    "For every row (study, dataset, model) with at least 2 finished methods the paper also "
    "reports: Δ = our ave - the paper's ave, per cell (accuracy points); MAD = the mean of |Δ| "
    f"over the row's cells; within {WITHIN_POINTS} = the cells with |Δ| ≤ {WITHIN_POINTS}; "
    "Spearman ρ = the rank correlation of the methods' aves, ours against the paper's "
    f"(needs {MIN_SPEARMAN_METHODS} methods); orderings = the paper's claims 'A beats B' in the "
    f"row (A's ave above B's by more than {ORDERING_MARGIN} points): one holds when our ave of "
    "A is above our ave of B, and is separated when our paired test of the pair (against the "
    f"row's best or sig+, Holm p < {ALPHA}, at least {MIN_TRIALS_TO_TEST} paired trials) is "
    "significant; pairs that neither test compares are not tested."
)


def _spearman(cells: pd.DataFrame) -> tuple[float, str]:
    """(Spearman ρ of our aves against the paper's, a note when it is undefined)."""
    if len(cells) < MIN_SPEARMAN_METHODS:
        return (
            math.nan,
            f"Spearman ρ needs {MIN_SPEARMAN_METHODS} methods, the row has {len(cells)}",
        )
    ours, published = cells["ave"].to_numpy(float), cells["paper_ave"].to_numpy(float)
    if np.ptp(ours) == 0 or np.ptp(published) == 0:
        return math.nan, "Spearman ρ undefined: every ave of one side is the same"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(ours, published)[0]), ""


def _pair_test(tests: pd.DataFrame, a: str, b: str) -> pd.Series | None:
    """The first paired test of one row's ``tests`` that compares ``a`` with ``b`` (against
    the row's best before against sig+), or None when no test compares them."""
    if tests.empty:
        return None
    pair = ((tests["method"] == a) & (tests["reference"] == b)) | (
        (tests["method"] == b) & (tests["reference"] == a)
    )
    return None if not pair.any() else tests[pair].iloc[0]


def _separation(test: pd.Series | None) -> tuple[int, str, float, bool, str]:
    """(pairs, test, Holm p, separated, in words) of one ordering from its paired test."""
    if test is None:
        return 0, "", math.nan, False, "not tested (neither the row's best nor sig+)"
    pairs, p = int(test["pairs"]), float(test["p_holm"])
    if test["test"] == "none" or pairs < MIN_TRIALS_TO_TEST or math.isnan(p):
        return pairs, str(test["test"]), p, False, f"too few pairs to test (n={pairs})"
    separated = bool(test["significant"])
    words = "separated" if separated else "not separated"
    return pairs, str(test["test"]), p, separated, f"{words} (Holm p = {p:.3g})"


def _orderings(key: tuple, cells: pd.DataFrame, tests: pd.DataFrame) -> list[list]:
    """The paper's orderings of one row (the pairs whose paper aves differ by more than
    :data:`ORDERING_MARGIN`) with ours: rows of :data:`ORDERING_COLUMNS`."""
    rows = []
    for (a, pa, oa), (b, pb, ob) in itertools.combinations(
        zip(cells["method"], cells["paper_ave"], cells["ave"], strict=True), 2
    ):
        if abs(pa - pb) <= ORDERING_MARGIN + _TOLERANCE:
            continue
        (better, p_better, o_better), (worse, p_worse, o_worse) = (
            ((a, pa, oa), (b, pb, ob)) if pa > pb else ((b, pb, ob), (a, pa, oa))
        )
        our_diff = float(o_better - o_worse)
        pairs, test, p, separated, words = _separation(_pair_test(tests, better, worse))
        rows.append(
            [*key, better, worse, float(p_better - p_worse), our_diff, our_diff > 0]
            + [pairs, test, p, separated, words]
        )
    return rows


def _row_differences(cells: pd.DataFrame) -> list[str]:
    """How one row's protocol differs from the paper's, from the summary alone: its epochs and
    its validation split (trials aside)."""
    epochs = int(cells["epochs"].max()) if cells["epochs"].notna().any() else PAPER_EPOCHS
    held = [h for h in cells.get("holdout", pd.Series(dtype=object)).fillna("") if h]
    validated = (cells.get("protocol", pd.Series(dtype=object)) == VALIDATION).any()
    validation = held[0] if held else ("a split" if validated else "")
    return protocol_differences(PAPER_TRIALS, epochs, None, validation)


def _trials_note(cells: pd.DataFrame) -> str:
    if cells["trials"].isna().all():
        return ""
    low, high = int(cells["trials"].min()), int(cells["trials"].max())
    if low == high == PAPER_TRIALS:
        return ""
    span = f"{low}" if low == high else f"{low}-{high}"
    return f"{span} trials per cell, not the paper's {PAPER_TRIALS}"


def _whole(value: float) -> int | float:
    return math.nan if pd.isna(value) else int(value)


def _distance_input(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with what :func:`distance_to_paper` reads that it lacks: ``study`` (empty),
    ``trials`` and ``epochs`` (NaN: not known), ``paper_ave`` (:func:`attach_paper`)."""
    out = summary.copy()
    if "study" not in out:
        out["study"] = ""
    out["study"] = out["study"].fillna("").astype(str)
    for column in ("trials", "epochs"):
        if column not in out:
            out[column] = math.nan
    if "paper_ave" not in out:
        out["base_model"] = [
            base_model(str(m), s) for m, s in zip(out["model"], out["study"], strict=True)
        ]
        out = attach_paper(out, model_column="base_model")
    return out


def _paper_rows(summary: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """((study, dataset, model label), cells) of every row with at least 2 finished cells the
    paper reports, in the summary's order."""
    finished = summary["trials"].fillna(1) > 0
    cells = summary[finished & summary["ave"].notna() & summary["paper_ave"].notna()]
    groups = cells.groupby(["study", "dataset", "model"], sort=False)
    return [(key, group) for key, group in groups if len(group) >= 2]


def distance_to_paper(
    summary: pd.DataFrame,
    tests: pd.DataFrame | None = None,
    protocols: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How far each row (study, dataset, model) is from the paper: (distance, orderings).

    ``summary``: :func:`summarize`'s frame; it needs only dataset, model, method and ave
    (``paper_ave`` is attached when missing; ``study``, ``trials``, ``epochs``, ``holdout``
    and ``protocol`` are used when present). Side by side, a row's model is labelled by its
    study (``nn2 (quick)``, study ``quick``): the label is matched to the paper's model.
    ``tests``: :func:`paired_tests`' frame (None: every ordering is "not tested").
    ``protocols``: per study, how it differs from the paper's protocol
    (:func:`~annealbench.report.paper.protocol_differences` with the paper's trials); a study
    not in it is judged by its rows' epochs and validation split.

    ``distance``: one row per row with at least 2 finished methods the paper reports, columns
    :data:`DISTANCE_COLUMNS`: ``model`` without the side-by-side label; ``mad`` the mean
    |ours - paper's ave|; ``within_0_5`` the cells within :data:`WITHIN_POINTS` of the paper's
    ave, of ``cells``; ``spearman`` ρ of the aves (NaN below :data:`MIN_SPEARMAN_METHODS`
    methods, said in ``note``); ``orderings_hold`` of ``orderings`` the paper's claims that
    ours holds, ``orderings_separated`` those that hold and our paired tests separate;
    ``trials`` the fewest of the row's cells, ``epochs`` the most; ``protocol_differs`` when
    epochs, subset or validation split differ from the paper's (the numbers are then a
    diagnostic, not a reproduction); ``note`` the protocol's differences in words.
    ``orderings``: one row per claim "better beats worse" (paper aves more than
    :data:`ORDERING_MARGIN` apart), columns :data:`ORDERING_COLUMNS`: ``our_diff`` = our ave of
    better - of worse, ``holds`` when it is positive, the paired test of the pair (``pairs``,
    ``test``, ``p_holm``), ``separated`` and ``separation`` in words.
    :data:`DISTANCE_DEFINITION` says it all in one paragraph.
    """
    tests = tests if tests is not None else pd.DataFrame(columns=["dataset", "model", "method"])
    summary = _distance_input(summary)
    protocols = protocols or {}
    distance: list[list] = []
    orderings: list[pd.DataFrame] = []
    for (study, dataset, label), cells in _paper_rows(summary):
        model = base_model(str(label), str(study))
        row_tests = tests[(tests["dataset"] == dataset) & (tests["model"] == label)]
        mine = pd.DataFrame(
            _orderings((study, dataset, model), cells, row_tests), columns=ORDERING_COLUMNS
        )
        orderings.append(mine)
        differences = list(protocols.get(study, _row_differences(cells)))
        diff = (cells["ave"] - cells["paper_ave"]).abs()
        rho, rho_note = _spearman(cells)
        notes = [*differences, _trials_note(cells), rho_note]
        distance.append(
            [study, dataset, model, len(cells), float(diff.mean())]
            + [int((diff <= WITHIN_POINTS + _TOLERANCE).sum()), rho, len(mine)]
            + [int(mine["holds"].sum()), int((mine["holds"] & mine["separated"]).sum())]
            + [_whole(cells["trials"].min()), _whole(cells["epochs"].max()), bool(differences)]
            + ["; ".join(n for n in notes if n)]
        )
    filled = [frame for frame in orderings if len(frame)]
    ordering_frame = (
        pd.concat(filled, ignore_index=True) if filled else pd.DataFrame(columns=ORDERING_COLUMNS)
    )
    return pd.DataFrame(distance, columns=DISTANCE_COLUMNS), ordering_frame
