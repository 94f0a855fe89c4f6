"""Each method at its own peak rate: a tuned study's search, with an equal budget per method.

The paper compares every method at one fixed peak rate; later work shows the peak rate can
dominate a comparison of schedule shapes unless it is tuned per method with an equal budget
(DeepOBS tunes each optimizer on a grid, then reruns seeds). A study with ``tune_scales``
runs in two stages, both in its store:

1. **search**: every (dataset, model, method) at every scale of the grid — the method's
   whole rate curve times the scale (``RunConfig.lr_scale``) — for ``tune_trials`` tuning
   seeds from :data:`~annealbench.training.config.TUNING_SEED` on (disjoint from the final
   trials' seeds), on the validation split. Every method gets the same number of runs and
   epochs: the budget.
2. **final trials**: each method's best scale — the highest mean validation score (the mean
   validation accuracy over the last 10% of epochs, over the tuning seeds; a scale at which
   any tuning run diverged is out), ties to the scale nearest 1 — trained for seeds
   ``0..trials-1``.

The choice is computed from the store every time the study runs, so a study killed in
either stage resumes where it stopped, and the final runs are added (once) as soon as a
method's search is complete. The search's runs are left out of the study's results
(:meth:`~annealbench.store.Store.runs_frame` by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from annealbench.errors import ConfigError, StudyError
from annealbench.training.config import TUNING_SEED, RunConfig, last_epochs

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from annealbench.store import Store
    from annealbench.study import Study

__all__ = ["Choice", "add_final_runs", "best_scale", "budget_line", "check", "choice_line",
           "choose",
           "final_configs", "scores", "search_configs"]  # fmt: skip

#: (dataset, model, method) -> the chosen scale.
Choice = dict[tuple[str, str, str], float]


def check(study: Study) -> None:
    """Refuse a tuning grid that cannot run: bad scales or trials, no validation split."""
    scales, trials = study.tune_scales, study.tune_trials
    if not scales:
        return
    if not all(
        isinstance(s, int | float) and not isinstance(s, bool) and 0 < s < 1e6 for s in scales
    ):
        raise StudyError(f"--tune-scales must be positive numbers, got {list(scales)}")
    if len(set(scales)) != len(scales):
        raise StudyError(f"--tune-scales lists a scale twice: {list(scales)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise StudyError(f"--tune-trials must be a whole number >= 1, got {trials!r}")
    if study.options.get("validation") is None:
        raise StudyError(
            "tuning selects each method's rate on a validation split, never on the test set: "
            "give --validation N (or a fraction such as 0.1) with --tune-scales"
        )
    if "lr_scale" in study.options:
        raise StudyError("give --tune-scales or an lr_scale run option, not both")
    if study.trials >= TUNING_SEED:
        raise StudyError(f"a tuned study holds at most {TUNING_SEED - 1} trials")


def search_configs(study: Study, definitions: Mapping[str, Any] | None = None) -> list[RunConfig]:
    """The search: every cell at every scale for every tuning seed, seed-major.
    ``definitions``: the study's stored settings, whose user methods and datasets the runs
    carry (so a rerun trains the definitions the study was started with)."""
    return [
        _config(study, d, m, meth, TUNING_SEED + i, scale, definitions)
        for i in range(study.tune_trials)
        for d in study.datasets
        for m in study.models
        for meth in study.methods
        for scale in study.tune_scales
    ]


def final_configs(
    study: Study, chosen: Choice, definitions: Mapping[str, Any] | None = None
) -> list[RunConfig]:
    """The final trials of every cell whose scale is chosen, seed-major, then the same at
    each shorter budget (the search ran at the full budget; its choice holds for all)."""
    from annealbench.study import budget_configs

    return budget_configs(study, [
        _config(study, d, m, meth, seed, chosen[(d, m, meth)], definitions)
        for seed in range(study.trials)
        for d in study.datasets
        for m in study.models
        for meth in study.methods
        if (d, m, meth) in chosen
    ])  # fmt: skip


def _config(
    study: Study, dataset: str, model: str, method: str, seed: int, scale: float,
    definitions: Mapping[str, Any] | None,
) -> RunConfig:  # fmt: skip
    stored = definitions or {}
    options = {**study.options, "lr_scale": float(scale)}
    try:
        return RunConfig(
            dataset=dataset, model=model, method=method, seed=seed,
            custom_method=(stored.get("custom_methods") or {}).get(method),
            custom_dataset=(stored.get("custom_datasets") or {}).get(dataset), **options,
        )  # fmt: skip
    except ConfigError as exc:
        raise StudyError(
            f"study {study.name!r} holds a method or dataset this process cannot build: {exc}; "
            "load its definition (--methods-file, or the study file that defines it)"
        ) from None


def scores(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per search run: dataset, model, method, lr_scale, seed, status, val_score
    (its mean validation accuracy over its last 10% of epochs; NaN if diverged or unfinished)."""
    search = runs.loc[runs["seed"] >= TUNING_SEED]
    curves = {
        run_id: curve.to_numpy(dtype=float)
        for run_id, curve in epochs.sort_values("epoch").groupby("run_id")["val_acc"]
    }
    rows = []
    for run in search.itertuples():
        curve = curves.get(run.run_id, ())
        value = math.nan
        if run.status == "done" and len(curve):
            value = float(curve[-last_epochs(len(curve)) :].mean())
        rows.append((run.dataset, run.model, run.method, float(run.lr_scale), run.seed,
                     run.status, value))  # fmt: skip
    import pandas as pd

    columns = ["dataset", "model", "method", "lr_scale", "seed", "status", "val_score"]
    return pd.DataFrame(rows, columns=columns)


def best_scale(per_scale: Mapping[float, float]) -> float | None:
    """The tuning rule on one cell's candidate scales (scale -> mean validation score; a
    scale at which a run diverged is no candidate): the highest score, ties to the scale
    nearest 1; None without a candidate."""
    scored = {float(s): v for s, v in per_scale.items() if not math.isnan(v)}
    if not scored:
        return None
    return max(scored, key=lambda s: (scored[s], -abs(math.log(s))))


def choose(study: Study, search: pd.DataFrame) -> Choice:
    """Each cell's best scale, for the cells whose search is complete (every run done or
    diverged); a cell all of whose runs diverged gets none."""
    chosen: Choice = {}
    for (d, m, meth), cell in search.groupby(["dataset", "model", "method"]):
        expected = len(study.tune_scales) * study.tune_trials
        if len(cell) != expected or not cell["status"].isin(["done", "diverged"]).all():
            continue
        # A scale at which any tuning run diverged is not a candidate: a rate that diverges
        # on one seed of the search is not safe for the final trials.
        per_scale = cell.groupby("lr_scale")["val_score"].agg(
            lambda v: v.mean() if v.notna().all() else math.nan
        )
        best = best_scale(per_scale.to_dict())
        if best is not None:
            chosen[(d, m, meth)] = best
    return chosen


def add_final_runs(store: Store, study: Study, study_id: int) -> tuple[Choice, int]:
    """Choose from the stored search and add the final trials of the chosen cells (runs
    already there are kept); return the choice and how many runs were added."""
    runs = store.runs_frame(study.name, tuning=True)
    epochs = store.epochs_frame(study.name, tuning=True)
    chosen = choose(study, scores(runs, epochs))
    stored = store.study_settings(study.name)
    added = store.add_runs(study_id, final_configs(study, chosen, stored)) if chosen else 0
    return chosen, added


def budget_line(study: Study) -> str:
    """The search's budget, the same for every method."""
    epochs = study.options.get("epochs")
    per_method = len(study.tune_scales) * study.tune_trials
    return (
        f"tuning: {per_method} runs per method and cell ({len(study.tune_scales)} scales "
        f"{', '.join(f'{s:g}' for s in study.tune_scales)} x {study.tune_trials} tuning "
        f"seed(s)) x {epochs} epochs, on the validation split; then {study.trials} final "
        "trial(s) at each method's best scale"
    )


def choice_line(chosen: Mapping[tuple[str, str, str], float]) -> str:
    """``tuned scales: sig+ x2, adam x0.5`` (per model when there are several)."""
    parts = [f"{meth} x{scale:g}" for (_d, _m, meth), scale in sorted(chosen.items())]
    return "tuned scales: " + ", ".join(parts)
