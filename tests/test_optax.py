"""annealbench.optax: the rate optax applies at each update is the schedule's, jitted or not,
scaled to a peak as AnnealingLR scales it; bad arguments are refused; the docs snippet runs."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import annealbench.optax
from annealbench import AnnealingLR, schedules
from annealbench.optax import OptaxSchedule
from annealbench.schedules import ScheduleError
from conftest import readme_block

SNIPPET = "### With optax"  # the README section
T = 30
EXTRA = 6  # updates past total_steps, which hold the final rate
#: float32 tolerance: its rounding of k / T, of the pieces' stretching and of the rate.
RTOL, ATOL = 1e-5, 1e-7


def expected(schedule: schedules.Schedule, factor: float = 1.0) -> np.ndarray:
    """The rate of update k = 0 .. T + EXTRA - 1, in float64."""
    return schedule(np.minimum(np.arange(T + EXTRA), T) / T) * factor


def train(sched: OptaxSchedule, *, jit: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Fit a tiny linear model with SGD and momentum for T + EXTRA updates. Returns the
    rate in the state's hyperparams after each update, the rate each update applied (its
    update over the momentum trace it scaled), and the first and the final loss."""
    key_x, key_w = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (32, 4))
    y = x @ jax.random.normal(key_w, (4,)) + 0.5
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=sched, momentum=0.9)

    def loss(params):
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    def step(params, state):
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        trace = state.inner_state[0].trace  # optax.sgd: trace, then scale by -rate
        applied = -updates["w"] / trace["w"]
        return optax.apply_updates(params, updates), state, applied

    if jit:
        step = jax.jit(step)
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    state = optimizer.init(params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(sched(0)))
    recorded, applied = [], []
    for _ in range(T + EXTRA):
        params, state, used = step(params, state)
        recorded.append(float(state.hyperparams["learning_rate"]))
        applied.append(np.asarray(used))
    assert int(state.count) == T + EXTRA
    start = float(loss({"w": jnp.zeros(4), "b": jnp.zeros(())}))
    return np.asarray(recorded), np.asarray(applied), start, float(loss(params))


@pytest.mark.parametrize("name,peak", [("sig+", None), ("cosine+", 0.05), ("wsd", 0.2)])
def test_optimizer_applies_the_schedules_rate_at_each_update(name, peak):
    sched = annealbench.optax.schedule(name, total_steps=T, peak=peak)
    schedule = schedules.get(name)
    want = expected(schedule, 1.0 if peak is None else peak / schedule.peak)
    jitted, applied, start, final = train(sched, jit=True)
    np.testing.assert_allclose(jitted, want, rtol=RTOL, atol=ATOL)
    # Update k applied the rate in the state after it: -update / trace, to float32.
    np.testing.assert_allclose(applied, np.repeat(want[:, None], 4, axis=1), rtol=1e-4, atol=ATOL)
    assert np.all(jitted[T:] == jitted[T])  # past total_steps: the final rate, held
    assert final < start / 5
    if peak is None:  # once (op by op is slow): without jit, the same rates
        eager, _, _, eager_final = train(sched, jit=False)
        np.testing.assert_allclose(eager, jitted, rtol=RTOL, atol=ATOL)
        assert eager_final == pytest.approx(final, rel=1e-4)


def test_rates_match_annealing_lr_with_the_peak_as_lr():
    schedule = schedules.get("sig+")
    sched = annealbench.optax.schedule(schedule, total_steps=T, peak=0.05)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = AnnealingLR(optimizer, schedule, total_steps=T)
    torch_rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping past total_steps may warn
        for _ in range(T + EXTRA):
            torch_rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    optax_rates = [float(sched(k)) for k in range(T + EXTRA)]
    np.testing.assert_allclose(optax_rates, torch_rates, rtol=RTOL, atol=ATOL)


def test_the_schedule_takes_ints_and_clips_counts():
    sched = annealbench.optax.schedule("cosine", total_steps=10)
    cosine = schedules.get("cosine")
    assert sched == annealbench.optax.schedule(cosine, total_steps=10)
    assert float(sched(-3)) == float(sched(0)) == pytest.approx(0.1)
    assert float(sched(10)) == float(sched(10**6)) == pytest.approx(cosine(1.0), rel=RTOL)
    rates = sched(jnp.arange(11, dtype=jnp.int32))
    assert isinstance(rates, jax.Array) and rates.dtype == jnp.float32
    np.testing.assert_allclose(rates, cosine(np.arange(11) / 10), rtol=RTOL, atol=ATOL)
    assert optax.sgd(learning_rate=sched) is not None  # plain optax takes it too


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (("nope", 10), {}, "unknown schedule 'nope'"),
        ((42, 10), {}, "must be a name .* or a Schedule, got int"),
        (("sig+", 0), {}, "total_steps must be an integer >= 1, got 0"),
        (("sig+", 2.5), {}, "total_steps must be an integer >= 1, got 2.5"),
        (("sig+", True), {}, "total_steps must be an integer >= 1, got True"),
        (("sig+", "10"), {}, "total_steps must be an integer >= 1, got '10'"),
        (("sig+", 10), {"peak": 0.0}, "peak must be > 0"),
        (("sig+", 10), {"peak": float("nan")}, "peak must be finite"),
    ],
)
def test_bad_arguments_raise_a_schedule_error(args, kwargs, match):
    with pytest.raises(ScheduleError, match=match):
        annealbench.optax.schedule(*args, **kwargs)


def test_docs_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = [readme_block(SNIPPET)]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    state, steps = namespace["state"], namespace["steps"]
    last = schedules.get("sig+")((steps - 1) / steps) * 0.5  # peak 0.05 of sig+'s 0.1
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(last, rel=RTOL)
    assert float(namespace["loss"](namespace["w"])) < 0.1
    printed = capsys.readouterr().out.split()
    assert float(printed[-1]) == pytest.approx(0.00087, abs=5e-6)
