"""The report's definitions and statistics on hand-made frames whose answers are worked out by
hand (or from first principles) in each test."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from annealbench.report import ReportError, analyze, stats


def frames(runs: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs_frame / epochs_frame from (dataset, model, method, seed, status, accuracies)."""
    run_rows, epoch_rows = [], []
    for run_id, (dataset, model, method, seed, status, accs) in enumerate(runs, start=1):
        run_rows.append((run_id, "s", dataset, model, method, seed, len(accs), status, None))
        for epoch, acc in enumerate(accs, start=1):
            epoch_rows.append(
                (run_id, "s", dataset, model, method, seed, epoch, 0.1, 1.0, acc, 1.0, acc, 1.0)
            )
    run_frame = pd.DataFrame(
        run_rows,
        columns=["run_id", "study", "dataset", "model", "method", "seed", "epochs", "status"]
        + ["error"],
    )
    epoch_frame = pd.DataFrame(
        epoch_rows,
        columns=["run_id", "study", "dataset", "model", "method", "seed", "epoch", "lr"]
        + ["train_loss", "train_acc", "test_loss", "test_acc", "wall_time"],
    )
    return run_frame, epoch_frame


def constant_run(method: str, seed: int, score: float, model: str = "nn2", n: int = 10) -> tuple:
    """A run whose last-10% mean is ``score`` (every epoch at ``score``)."""
    return ("mnist", model, method, seed, "done", [score] * n)


# -- the score of a run ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochs", "expected"),
    [(1, 1), (5, 1), (9, 1), (10, 1), (19, 1), (20, 2), (30, 3), (70, 7), (100, 10), (101, 10)],
)
def test_last_epochs_is_a_tenth_rounded_down_but_at_least_one(epochs: int, expected: int) -> None:
    assert stats.last_epochs(epochs) == expected


def test_last_epochs_refuses_an_empty_run() -> None:
    with pytest.raises(ValueError, match="at least one epoch"):
        stats.last_epochs(0)


def test_score_is_the_mean_of_the_last_tenth_and_peak_the_best_epoch() -> None:
    # 20 epochs -> the last 2 count: (80 + 90) / 2 = 85; the peak (95) is earlier.
    accs = [50.0] * 10 + [95.0] + [60.0] * 7 + [80.0, 90.0]
    runs, epochs = frames([("mnist", "nn2", "sig", 0, "done", accs)])
    scores = stats.run_scores(
        runs, epochs.sample(frac=1.0, random_state=0)
    )  # order must not matter
    assert scores.loc[0, "score"] == pytest.approx(85.0)
    assert scores.loc[0, "peak"] == 95.0
    assert scores.loc[0, "final"] == 90.0
    assert scores.loc[0, "epochs"] == 20


def test_a_short_run_scores_its_last_epoch() -> None:
    runs, epochs = frames([("mnist", "nn2", "sig", 0, "done", [10.0, 20.0, 30.0])])
    assert stats.run_scores(runs, epochs).loc[0, "score"] == 30.0


def test_only_finished_runs_get_scores() -> None:
    runs, epochs = frames(
        [
            ("mnist", "nn2", "sig", 0, "done", [90.0]),
            ("mnist", "nn2", "sig", 1, "diverged", [10.0]),
            ("mnist", "nn2", "sig", 2, "running", [50.0]),
        ]
    )
    assert stats.run_scores(runs, epochs)["seed"].tolist() == [0]


def test_two_finished_runs_with_the_same_key_are_refused() -> None:
    runs, epochs = frames([constant_run("sig", 0, 90.0), constant_run("sig", 0, 91.0)])
    with pytest.raises(ValueError, match="share dataset, model, method and seed"):
        stats.run_scores(runs, epochs)


def test_a_finished_run_without_epochs_is_refused() -> None:
    runs, epochs = frames([constant_run("sig", 0, 90.0)])
    with pytest.raises(ValueError, match="without any epoch"):
        stats.run_scores(runs, epochs.iloc[0:0])


# -- a cell: ave, max, peak, std, CI ---------------------------------------------------------


def test_summary_definitions_match_hand_computation() -> None:
    # Three trials of 10 epochs each: scores are the last epoch (10 epochs -> 1 counted).
    runs, epochs = frames(
        [
            ("mnist", "nn2", "sig", 0, "done", [99.0] + [0.0] * 8 + [90.0]),
            ("mnist", "nn2", "sig", 1, "done", [0.0] * 9 + [92.0]),
            ("mnist", "nn2", "sig", 2, "done", [0.0] * 9 + [94.0]),
        ]
    )
    summary = stats.summarize(runs, stats.run_scores(runs, epochs))
    row = summary.iloc[0]
    assert row["trials"] == 3 and row["diverged"] == 0 and row["missing"] == 0
    assert row["ave"] == pytest.approx(92.0)
    assert row["max"] == pytest.approx(94.0)
    assert row["peak"] == pytest.approx(99.0)  # a single epoch, not a score
    # std (ddof=1) of 90, 92, 94 = 2; the t quantile for 2 dof at 97.5% is 4.302652729...
    assert row["std"] == pytest.approx(2.0)
    half_width = 4.302652729911275 * 2.0 / math.sqrt(3)
    assert row["ci_low"] == pytest.approx(92.0 - half_width)
    assert row["ci_high"] == pytest.approx(92.0 + half_width)


def test_one_trial_has_no_spread() -> None:
    runs, epochs = frames([constant_run("sig", 0, 90.0)])
    row = stats.summarize(runs, stats.run_scores(runs, epochs)).iloc[0]
    assert row["ave"] == row["max"] == 90.0
    assert math.isnan(row["std"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])


def test_diverged_runs_are_counted_not_averaged_in() -> None:
    runs, epochs = frames(
        [
            constant_run("sig", 0, 90.0),
            constant_run("sig", 1, 92.0),
            ("mnist", "nn2", "sig", 2, "diverged", [10.0, 10.0]),  # chance level
        ]
    )
    row = stats.summarize(runs, stats.run_scores(runs, epochs)).iloc[0]
    assert (row["trials"], row["diverged"], row["runs"]) == (2, 1, 3)
    assert row["ave"] == pytest.approx(91.0)
    assert row["peak"] == 92.0


def test_unfinished_runs_are_missing_with_their_status() -> None:
    runs, epochs = frames(
        [
            constant_run("sig", 0, 90.0),
            ("mnist", "nn2", "sig", 1, "running", [50.0]),
            ("mnist", "nn2", "sig", 2, "pending", []),
            ("mnist", "nn2", "sig", 3, "pending", []),
            ("mnist", "nn2", "exp", 0, "pending", []),
        ]
    )
    summary = stats.summarize(runs, stats.run_scores(runs, epochs))
    sig = summary.set_index("method").loc["sig"]
    assert (sig["trials"], sig["missing"]) == (1, 3)
    assert sig["missing_detail"] == "2 pending, 1 running"
    exp = summary.set_index("method").loc["exp"]
    assert exp["trials"] == 0 and math.isnan(exp["ave"])
    missing = stats.missing_runs(summary)
    assert missing["method"].tolist() == ["exp", "sig"]  # the paper's order


def test_summary_carries_the_papers_numbers_and_the_difference() -> None:
    runs, epochs = frames([constant_run("sig+", 0, 98.0), constant_run("sig+", 1, 98.5)])
    row = stats.summarize(runs, stats.run_scores(runs, epochs)).iloc[0]
    # Table 2, MNIST, NN-2, sig+: ave 98.55, max 98.65.
    assert row["paper_ave"] == 98.55 and row["paper_max"] == 98.65
    assert row["diff_ave"] == pytest.approx(98.25 - 98.55)
    assert row["diff_max"] == pytest.approx(98.5 - 98.65)


def test_cells_are_in_the_papers_order() -> None:
    runs, epochs = frames(
        [
            constant_run("sig+", 0, 90.0, model="vgg9"),
            constant_run("mine", 0, 90.0, model="nn2"),
            constant_run("0.1", 0, 90.0, model="nn2"),
            constant_run("sig+", 0, 90.0, model="nn2"),
            ("cifar10", "resnet18", "sig", 0, "done", [50.0]),
        ]
    )
    summary = stats.summarize(runs, stats.run_scores(runs, epochs))
    assert list(zip(summary["model"], summary["method"], strict=True)) == [
        ("nn2", "0.1"),
        ("nn2", "sig+"),
        ("nn2", "mine"),
        ("vgg9", "sig+"),
        ("resnet18", "sig"),
    ]


# -- paired tests -----------------------------------------------------------------------


def exact_wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided exact Wilcoxon p by enumerating all 2**n sign assignments (distinct |d|)."""
    ranks = sps.rankdata(np.abs(diff))
    observed = ranks[diff > 0].sum()
    centre = ranks.sum() / 2
    sums = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in
            itertools.product([0, 1], repeat=len(diff))]  # fmt: skip
    extreme = sum(abs(s - centre) >= abs(observed - centre) - 1e-12 for s in sums)
    return extreme / len(sums)


def test_wilcoxon_with_six_pairs_matches_exact_enumeration() -> None:
    x = np.array([91.0, 92.5, 90.2, 93.1, 91.7, 92.2])
    y = np.array([90.0, 92.8, 89.0, 92.0, 91.3, 90.6])  # differences 1, -.3, 1.2, 1.1, .4, 1.6
    test, _, p = stats.paired_test(x, y)
    assert test == "wilcoxon"
    assert p == pytest.approx(exact_wilcoxon_p(x - y))
    assert p == pytest.approx(4 / 64)  # rank sum of negatives = 1: sums 0 and 1 on each side


def test_wilcoxon_all_one_sign_reaches_its_smallest_p() -> None:
    x = np.arange(6.0) + 1.0
    assert stats.paired_test(x, np.zeros(6))[2] == pytest.approx(2 / 64)
    assert stats.smallest_wilcoxon_p(6) == pytest.approx(2 / 64)
    assert stats.smallest_wilcoxon_p(10) == pytest.approx(2 / 1024)


def test_t_test_below_six_pairs_matches_hand_computation() -> None:
    x = np.array([91.0, 92.0, 93.5])
    y = np.array([90.0, 90.5, 91.0])  # differences 1.0, 1.5, 2.5: mean 5/3, sd sqrt(7/12)
    test, t, p = stats.paired_test(x, y)
    mean, sd = 5 / 3, math.sqrt(7 / 12)
    expected_t = mean / (sd / math.sqrt(3))
    assert test == "t-test"
    assert t == pytest.approx(expected_t)
    assert p == pytest.approx(2 * sps.t.sf(expected_t, df=2))


def test_identical_trials_are_not_different_and_one_pair_is_not_tested() -> None:
    assert stats.paired_test(np.ones(7), np.ones(7)) == ("wilcoxon", 0.0, 1.0)
    test, _, p = stats.paired_test(np.array([1.0]), np.array([0.0]))
    assert test == "none" and math.isnan(p)


def test_a_constant_gain_on_every_seed_is_the_t_tests_limit() -> None:
    assert stats.paired_test(np.array([2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0])) == (
        "t-test",
        math.inf,
        0.0,
    )


def test_holm_matches_hand_computation() -> None:
    # sorted p: .01 (x4 = .04), .02 (x3 = .06), .03 (x2 = .06), .04 (x1, but monotone -> .06)
    adjusted = stats.holm([0.03, 0.01, float("nan"), 0.04, 0.02])
    assert adjusted[[1, 4, 0, 3]] == pytest.approx([0.04, 0.06, 0.06, 0.06])
    assert math.isnan(adjusted[2])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def paired_study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row (mnist, nn2): sig+ best, str close to it, 0.1 far below; str+ ran other seeds."""
    sig_plus = [92.0, 92.4, 91.8, 92.6, 92.1, 92.3]
    bumps = [0.1, -0.25, 0.3, 0.05, 0.2, 0.15]  # str = sig+ - bumps: mixed signs
    runs = []
    for seed in range(6):
        runs.append(constant_run("sig+", seed, sig_plus[seed]))
        runs.append(constant_run("str", seed, sig_plus[seed] - bumps[seed]))
        runs.append(constant_run("0.1", seed, sig_plus[seed] - 3.0 - seed * 0.1))
    for seed in (4, 5, 6, 7):  # only seeds 4 and 5 pair with sig+
        runs.append(constant_run("str+", seed, 91.0 + seed * 0.01))
    return frames(runs)


def test_paired_tests_pair_by_seed_against_the_best_and_sig_plus() -> None:
    runs, epochs = paired_study()
    scores = stats.run_scores(runs, epochs)
    summary = stats.summarize(runs, scores)
    tests = stats.paired_tests(summary, scores)
    best = tests[tests["against"] == "best"].set_index("method")
    assert set(best["reference"]) == {"sig+"}
    assert best.loc["str", "pairs"] == 6 and best.loc["str", "test"] == "wilcoxon"
    diffs = -np.array([0.1, -0.25, 0.3, 0.05, 0.2, 0.15])
    assert best.loc["str", "diff"] == pytest.approx(diffs.mean())
    assert best.loc["str", "p_value"] == pytest.approx(exact_wilcoxon_p(diffs))
    assert best.loc["str+", "pairs"] == 2 and best.loc["str+", "test"] == "t-test"
    assert best.loc["0.1", "p_value"] == pytest.approx(2 / 64)
    # Holm over the family {0.1, str, str+}: 0.1 has the smallest p, multiplied by 3.
    assert best.loc["0.1", "p_holm"] == pytest.approx(min(1.0, 3 * 2 / 64))
    assert not best.loc["str", "significant"]
    # Here sig+ is also the best, so both families agree.
    sig_plus = tests[tests["against"] == "sig+"].set_index("method")
    assert sig_plus["p_holm"].to_dict() == pytest.approx(best["p_holm"].to_dict())


def test_the_best_reference_follows_the_highest_ave() -> None:
    runs, epochs = frames(
        [constant_run("exp", s, 95.0 + s) for s in range(3)]
        + [constant_run("sig+", s, 90.0 + s) for s in range(3)]
        + [constant_run("str", s, 93.0 + s * 0.5) for s in range(3)]
    )
    scores = stats.run_scores(runs, epochs)
    tests = stats.paired_tests(stats.summarize(runs, scores), scores)
    best = tests[tests["against"] == "best"]
    assert set(best["reference"]) == {"exp"}
    assert sorted(best["method"]) == ["sig+", "str"]
    assert set(tests.loc[tests["against"] == "sig+", "method"]) == {"exp", "str"}


def test_no_sig_plus_means_no_sig_plus_family() -> None:
    runs, epochs = frames([constant_run("exp", s, 95.0 + s) for s in range(2)])
    scores = stats.run_scores(runs, epochs)
    tests = stats.paired_tests(stats.summarize(runs, scores), scores)
    assert tests.empty


def test_unreachable_significance_is_detected() -> None:
    runs, epochs = paired_study()
    scores = stats.run_scores(runs, epochs)
    tests = stats.paired_tests(stats.summarize(runs, scores), scores)
    weak = stats.unreachable_families(tests)
    # Two Wilcoxon comparisons with 6 pairs: 2 * 2/64 = 0.0625 >= 0.05 in both families.
    assert sorted(weak["against"]) == ["best", "sig+"]
    assert set(weak["comparisons"]) == {2}


# -- ranks --------------------------------------------------------------------------------


def test_average_ranks_match_hand_computation() -> None:
    # Row nn2: a 95 > b 93 = c 93 -> ranks 1, 2.5, 2.5. Row lenet4: c 99 > a 98 -> c 1, a 2.
    runs, epochs = frames(
        [
            constant_run("a", 0, 95.0),
            constant_run("b", 0, 93.0),
            constant_run("c", 0, 93.0),
            constant_run("a", 0, 98.0, model="lenet4"),
            constant_run("c", 0, 99.0, model="lenet4"),
        ]
    )
    ranks = stats.average_ranks(stats.summarize(runs, stats.run_scores(runs, epochs)))
    table = ranks.set_index("method")
    assert table.loc["a", "mean_rank"] == pytest.approx(1.5)
    assert table.loc["b", "mean_rank"] == pytest.approx(2.5)
    assert table.loc["c", "mean_rank"] == pytest.approx(1.75)
    assert table["rows"].to_dict() == {"a": 2, "c": 2, "b": 1}
    assert table["wins"].to_dict() == {"a": 1, "c": 1, "b": 0}
    assert ranks["method"].tolist() == ["a", "c", "b"]


def test_friedman_runs_only_on_complete_rows() -> None:
    runs, epochs = frames(
        [
            constant_run(m, 0, 90.0 + i, model=model)
            for model in ("nn2", "nn3", "lenet4")
            for i, m in enumerate(("a", "b", "c"))
        ]  # fmt: skip
    )
    result = stats.friedman(stats.summarize(runs, stats.run_scores(runs, epochs)))
    assert result is not None and result["rows"] == 3 and result["methods"] == 3
    # Same ordering in all 3 rows: chi2 = 12/(n k (k+1)) sum R^2 - 3 n (k+1) = 6.
    assert result["statistic"] == pytest.approx(6.0)
    runs2, epochs2 = frames([constant_run("a", 0, 90.0), constant_run("b", 0, 91.0)])
    assert stats.friedman(stats.summarize(runs2, stats.run_scores(runs2, epochs2))) is None


# -- analyze ------------------------------------------------------------------------------


def test_analyze_refuses_no_runs_and_frames_of_another_shape() -> None:
    runs, epochs = frames([])
    with pytest.raises(ReportError, match="no runs"):
        analyze(runs, epochs)
    runs, epochs = frames([constant_run("sig", 0, 90.0)])
    with pytest.raises(ReportError, match="lack the columns"):
        analyze(runs.drop(columns="seed"), epochs)


def test_analyze_keeps_every_epoch_but_curves_use_finished_runs() -> None:
    runs, epochs = frames(
        [constant_run("sig", 0, 90.0), ("mnist", "nn2", "sig", 1, "diverged", [10.0, 9.0])]
    )
    analysis = analyze(runs, epochs)
    assert len(analysis.epochs) == 12
    assert set(analysis.done_epochs["seed"]) == {0}
