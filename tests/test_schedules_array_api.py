"""The schedules on every array library: torch tensors (float32, float64, any device, inside
``torch.compile``) and JAX arrays (also traced in ``jax.jit``) give numpy's rates; numpy
input gives exactly the rates of the former lookup-and-mask implementation; and
``annealbench.schedules`` still imports and runs with numpy alone."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from annealbench import schedules
from annealbench.schedules import Schedule

#: Every built-in schedule with the paper's defaults, and variants of its pieces.
CASES: dict[str, Schedule] = {name: schedules.get(name) for name in schedules.names()}
CASES.update(
    {
        "sig+ to start": schedules.get("sig+", warmup_to="start"),
        "str+ from 0": schedules.get("str+", warmup_start=0.0, warmup_fraction=0.05),
        "wsd 1-sqrt": schedules.get("wsd", cooldown="1-sqrt"),
        "wsd cooldown only": schedules.get("wsd", warmup_fraction=0.0, decay_fraction=1.0),
        "sgdr x3": schedules.get("sgdr", cycles=4, cycle_mult=3.0),
        "rep 3": schedules.get("rep", cycles=3),
        "poly 0.5": schedules.get("poly", power=0.5),
        "exp+": schedules.warmup(schedules.get("exp"), 0.2, continuous=True, start=0.0),
    }
)
#: Step counts 0..T: T = 3000 lands exactly on every boundary at a tenth or a third.
T = 3000
COUNTS = np.arange(T + 1)
#: float32 tolerance: a fraction of the peak, plus the rate's change over an error in
#: progress of ROUNDING (float32 rounds k / T to about 6e-8, and the stretch of a nested
#: piece subtracts its start), so a steep curve (1-sqrt at its start) is allowed its slope.
F32 = 2e-6
ROUNDING = 2e-7
#: A progress step beyond float32's rounding: where the numpy rates just before and after
#: differ by much, float32 may land on either side of a jump.
DELTA = 1e-6


def numpy_rates(schedule: Schedule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rates at k / T in float64, and just before and just after each."""
    p = COUNTS / T
    before = schedule(np.clip(p - DELTA, 0.0, 1.0))
    after = schedule(np.clip(p + DELTA, 0.0, 1.0))
    return schedule(p), before, after


def assert_float32_close(got: np.ndarray, schedule: Schedule) -> None:
    """``got`` (rates at k / T computed in float32) within float32 tolerance of numpy's, or
    on either side of a jump where the schedule jumps."""
    ref, before, after = numpy_rates(schedule)
    base = F32 * schedule.peak
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == ref.shape
    change = np.abs(after - before)
    jump = change > 100 * base
    tol = base + np.where(jump, 0.0, ROUNDING * change / (2 * DELTA))
    close = np.abs(got - ref) <= tol
    beside = jump & ((np.abs(got - before) <= base) | (np.abs(got - after) <= base))
    wrong = ~(close | beside)
    assert not wrong.any(), (
        f"at k = {COUNTS[wrong][:5]}: got {got[wrong][:5]}, numpy {ref[wrong][:5]}"
    )
    assert beside.sum() <= 8  # a handful of jumps, not a whole stretch off


# --------------------------------------------------------------------------- numpy


def masked(schedule: Schedule, p: np.ndarray) -> np.ndarray:
    """The former numpy implementation of the composed shapes (a lookup for the staircase,
    boolean masks for sequences), over the shapes' own formulas."""
    if isinstance(schedule, schedules.Staircase):
        index = np.searchsorted(np.asarray(schedule.milestones), p, side="right")
        return np.asarray(schedule.levels)[index]
    if isinstance(schedule, schedules.Repeat) and schedule.cycles > 1:
        joined = schedules.Sequence((schedule.schedule,) * schedule.cycles, schedule._boundaries())
        return masked(joined, p)
    if isinstance(schedule, schedules.Repeat):
        return masked(schedule.schedule, p)
    if isinstance(schedule, schedules.Sequence):
        edges = np.asarray((0.0, *schedule.boundaries, 1.0))
        index = np.searchsorted(edges[1:-1], p, side="right")
        out = np.empty_like(p)
        for i, part in enumerate(schedule.parts):
            mask = index == i
            if mask.any():
                lo, hi = edges[i], edges[i + 1]
                out[mask] = masked(part, np.clip((p[mask] - lo) / (hi - lo), 0.0, 1.0))
        return out
    return schedule._value(p, np)


@pytest.mark.parametrize("name", CASES)
def test_numpy_rates_are_bit_identical_to_the_masked_implementation(name):
    schedule = CASES[name]
    p = np.concatenate([np.linspace(0.0, 1.0, 2001), COUNTS / T, COUNTS[:200] / 7919])
    edges = np.asarray([0.1, 0.2, 0.3, 1 / 3, 2 / 3, 0.8, 0.9, 1 / 7, 3 / 7])
    p = np.concatenate([p, edges, np.nextafter(edges, 0.0), np.nextafter(edges, 1.0)])
    got = schedule(p)
    assert got.dtype == np.float64
    assert np.array_equal(got, masked(schedule, p))
    scalars = p[::50]
    old = [float(masked(schedule, np.asarray([x]))[0]) for x in scalars]
    assert [schedule(float(x)) for x in scalars] == old
    assert all(type(schedule(float(x))) is float for x in scalars[:3])
    assert schedule(np.reshape(p[:12], (3, 4))).shape == (3, 4)


def test_schedules_import_and_run_with_numpy_alone():
    code = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "jax", "jaxlib", "array_api_compat"}:
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
import numpy as np
import annealbench.schedules as s

for name in s.names():
    schedule = s.from_config(s.get(name).to_config())
    assert type(schedule(0.5)) is float and schedule(np.linspace(0, 1, 5)).shape == (5,)
    assert schedule([0.0, 1.0]).shape == (2,)
try:
    s.get("sig")(float("nan"))
except s.ScheduleError:
    pass
else:
    raise AssertionError("NaN progress was accepted")
print(sorted(m for m in ("torch", "jax", "array_api_compat") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- torch


@pytest.mark.parametrize("name", CASES)
def test_torch_float32_and_float64_give_numpys_rates(name):
    schedule = CASES[name]
    for dtype in (torch.float32, torch.float64):
        p = torch.arange(T + 1, dtype=dtype) / T
        got = schedule(p)
        assert isinstance(got, torch.Tensor)
        assert (got.dtype, got.device, got.shape) == (dtype, p.device, p.shape)
        if dtype == torch.float64:  # the same progress: only ulps of exp, cos, pow differ
            ref = schedule(COUNTS / T)
            np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13, atol=0)
        else:
            assert_float32_close(got.numpy(), schedule)


def test_torch_keeps_device_dtype_and_shape_and_clips_instead_of_checking():
    schedule = CASES["sig+"]
    meta = schedule(torch.empty(2, 3, dtype=torch.float64, device="meta"))
    assert (meta.device.type, meta.dtype, meta.shape) == ("meta", torch.float64, (2, 3))
    assert schedule(torch.tensor(0.05)).shape == ()
    assert schedule(torch.tensor(0.05)).item() == pytest.approx(0.055, rel=1e-6)
    clipped = schedule(torch.tensor([-0.5, 0.0, 1.0, 1.5]))
    assert clipped[0] == clipped[1] and clipped[2] == clipped[3]
    counts = torch.arange(T + 1)  # an integer tensor is progress in torch's default float
    assert schedule(counts / T).dtype == torch.float32
    assert schedule(torch.tensor([0, 1])).dtype == torch.get_default_dtype()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_torch_on_cuda_gives_numpys_rates():
    for schedule in CASES.values():
        got = schedule(torch.arange(T + 1, device="cuda") / T)
        assert got.device.type == "cuda"
        assert_float32_close(got.cpu().numpy(), schedule)


def test_torch_compile_traces_every_schedule_in_one_graph():
    """``fullgraph=True`` fails on any graph break: a branch on a value, ``.item()``, numpy.
    Those are found by dynamo's trace, which every backend shares; the ``eager`` backend
    then runs the captured graph as it is, where inductor would spend most of a minute of
    these two cores generating kernels, which tests torch rather than the schedules."""
    every = list(CASES.values())

    def rates(count: torch.Tensor) -> torch.Tensor:
        return torch.stack([schedule(count / T) for schedule in every])

    compiled = torch.compile(rates, fullgraph=True, backend="eager")
    got = compiled(torch.arange(T + 1)).numpy()
    for row, schedule in zip(got, every, strict=True):
        assert_float32_close(row, schedule)


# --------------------------------------------------------------------------- jax


@pytest.mark.parametrize("name", CASES)
def test_jax_float32_gives_numpys_rates(name):
    schedule = CASES[name]
    got = schedule(jnp.arange(T + 1) / T)
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32
    assert_float32_close(np.asarray(got), schedule)


def test_jax_jit_with_a_traced_integer_count():
    every = list(CASES.values())
    traces = []

    @jax.jit
    def rates(count: jax.Array) -> jax.Array:
        traces.append(count)
        return jnp.stack([schedule(count / T) for schedule in every])

    by_count = rates(jnp.arange(T + 1))
    for row, schedule in zip(np.asarray(by_count), every, strict=True):
        assert_float32_close(row, schedule)
    one_by_one = jax.jit(lambda k: jnp.stack([s(k / T) for s in every]))
    for k in (0, 1, 299, 300, 1000, 2999, 3000):
        assert np.array_equal(one_by_one(jnp.int32(k)), by_count[:, k])
    assert len(traces) == 1 and isinstance(traces[0], jax.core.Tracer)
    assert one_by_one._cache_size() == 1  # one trace for every count: nothing specialised
