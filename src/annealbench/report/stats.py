"""Scores, per-cell summaries and paired tests: pure functions over the store's DataFrames.

Definitions (stated in the report too):

- a run's **score** is its mean test accuracy over the last 10% of its epochs (at least one);
- a cell (dataset, model, method) aggregates its finished trials ("done" runs): ``ave`` = mean
  score, ``max`` = best trial's score, ``peak`` = best single-epoch test accuracy of any trial,
  ``std`` = sample standard deviation of the scores (ddof=1), ``ci_low``/``ci_high`` = 95%
  confidence interval of the mean score from the t-distribution with trials-1 degrees of freedom;
- diverged runs are counted, never averaged in; runs not finished yet are counted as missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from annealbench.report.paper import (
    PAPER_EPOCHS,
    attach_paper,
    order_datasets,
    order_methods,
    order_models,
)

SCORE_FRACTION = 0.1
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

ROW = ["dataset", "model"]
CELL = ["dataset", "model", "method"]
RUN_KEY = ["dataset", "model", "method", "seed"]


def last_epochs(n_epochs: int, fraction: float = SCORE_FRACTION) -> int:
    """How many final epochs a score averages: floor(fraction * n), at least one."""
    if n_epochs < 1:
        raise ValueError(f"a run needs at least one epoch, got {n_epochs}")
    # The small epsilon keeps 0.1 * 30 = 3.0000000000000004 and 0.1 * 70 = 7.000000000000001 exact.
    return max(1, math.floor(n_epochs * fraction + 1e-9))


def run_scores(
    runs: pd.DataFrame, epochs: pd.DataFrame, fraction: float = SCORE_FRACTION
) -> pd.DataFrame:
    """One row per finished ("done") run: its key, score, peak and epoch count.

    ``runs`` needs run_id, dataset, model, method, seed, status; ``epochs`` needs run_id, epoch,
    test_acc. A "done" run without epochs is an inconsistent store and raises ValueError.
    """
    done = runs.loc[runs["status"] == DONE, ["run_id", *RUN_KEY]]
    duplicated = done.duplicated(RUN_KEY, keep=False)
    if duplicated.any():
        first = done.loc[duplicated, RUN_KEY].iloc[0].to_dict()
        raise ValueError(
            f"two finished runs share dataset, model, method and seed ({first}); "
            "report one study at a time"
        )
    columns = [*RUN_KEY, "run_id", "epochs", "score", "peak", "final"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    curves = epochs.loc[epochs["run_id"].isin(done["run_id"]), ["run_id", "epoch", "test_acc"]]
    rows = []
    for run_id, curve in curves.sort_values(["run_id", "epoch"]).groupby("run_id", sort=False):
        acc = curve["test_acc"].to_numpy(dtype=float)
        tail = acc[-last_epochs(len(acc), fraction) :]
        rows.append((run_id, len(acc), tail.mean(), acc.max(), acc[-1]))
    per_run = pd.DataFrame(rows, columns=["run_id", "epochs", "score", "peak", "final"])
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


def summarize(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per cell in ``runs``: status counts, ave, max, peak, std, CI, paper's numbers.

    Statistics use only finished trials; a cell with none has NaN statistics.
    """
    counts = status_counts(runs)
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
    summary = counts.merge(agg.reset_index(), on=CELL, how="left")
    summary = attach_paper(summary)
    summary["diff_ave"] = summary["ave"] - summary["paper_ave"]
    summary["diff_max"] = summary["max"] - summary["paper_max"]
    return sort_cells(summary).reset_index(drop=True)


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
    """Every method of each row against the row's best method (highest ``ave``) and against sig+.

    Trials are paired by seed (same seed = same initial weights and batch order); only seeds
    finished by both methods count. ``diff`` = mean(method - reference) over the pairs.
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
        best = cells.loc[cells["ave"].idxmax(), "method"]
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
    """Each method's mean rank by ``ave`` over the rows (dataset, model) where it finished.

    Rank 1 is the best; ties share the mean of their ranks. ``wins`` counts rows where the method
    ranks first (shared firsts included).
    """
    done = summary[summary["trials"] > 0].copy()
    columns = ["method", "rows", "mean_rank", "wins"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    done["rank"] = done.groupby(ROW)["ave"].rank(ascending=False, method="min")
    done["mean_of_ranks"] = done.groupby(ROW)["ave"].rank(ascending=False, method="average")
    ranks = done.groupby("method").agg(
        rows=("mean_of_ranks", "size"),
        mean_rank=("mean_of_ranks", "mean"),
        wins=("rank", lambda r: int((r == 1).sum())),
    )
    ranks = ranks.reset_index().sort_values(["mean_rank", "method"], kind="stable")
    return ranks[columns].reset_index(drop=True)


def friedman(summary: pd.DataFrame) -> dict[str, float | int] | None:
    """Friedman test that all methods rank alike, over the rows where every method finished.

    None when it cannot be run (fewer than 3 methods or 2 complete rows).
    """
    done = summary[summary["trials"] > 0]
    table = done.pivot_table(index=ROW, columns="method", values="ave").dropna()
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


def verdicts(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model): the best method by ``ave``, its ave ± std [95% CI], and
    how certain that is, in words, from the paired tests against it.

    ``beaten``: methods significantly worse (Holm p < 0.05) on at least
    :data:`MIN_TRIALS_TO_TEST` pairs; ``tied``: the others, with the runner-up and its
    difference first. ``caution``: too few trials or too short runs (:func:`cautions`).
    """
    columns = [*ROW, "best", "score", "trials", "epochs", "beaten", "tied", "verdict", "caution"]
    rows = []
    for (dataset, model), cells in summary[summary["trials"] > 0].groupby(ROW, sort=False):
        best = cells.loc[cells["ave"].idxmax()]
        mine = tests[
            (tests["dataset"] == dataset) & (tests["model"] == model) & (tests["against"] == "best")
        ].sort_values("diff", ascending=False)
        solid = mine["significant"].astype(bool) & (mine["pairs"] >= MIN_TRIALS_TO_TEST)
        beaten, tied = list(mine.loc[solid, "method"]), mine[~solid]
        trials, epochs = int(best["trials"]), int(best["epochs"])
        warn = cautions(trials, epochs)
        if len(cells) == 1:
            verdict = "the only method of this row"
        elif trials < MIN_TRIALS_TO_TEST:
            verdict = f"highest mean, but {trials} trials are too few to say it beats the others"
        elif tied.empty:
            verdict = f"significantly better than all {len(beaten)} others (Holm p < {ALPHA})"
        else:
            runner = tied.iloc[0]
            verdict = (
                f"not significantly better than {', '.join(tied['method'])} "
                f"(runner-up {runner['method']}: {runner['diff']:+.2f} points, "
                f"p = {runner['p_holm']:.3g}); better than {len(beaten)} other(s)"
            )
        rows.append(
            [dataset, model, best["method"], interval_text(best), trials, epochs]
            + [", ".join(beaten), ", ".join(tied["method"]), verdict, "; ".join(warn)]
        )
    return pd.DataFrame(rows, columns=columns)
