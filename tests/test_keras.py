"""annealbench.keras: the rate Keras applies at each update is the schedule's at that update's
count of earlier ones; the schedule saves and loads with a model; the JAX backend (in a
subprocess, its backend being chosen at import) does the same; the docs snippet runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # conftest sets it; this file runs alone too

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from annealbench import schedules  # noqa: E402
from annealbench.keras import AnnealingSchedule  # noqa: E402
from annealbench.schedules import ScheduleError  # noqa: E402
from conftest import readme_block

#: Keras's torch backend converts tensors with np.array(tensor), which numpy 2 warns about
#: on every batch: Keras's business, not this module's.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
TESTS = Path(__file__).resolve().parent
SNIPPET = "### With Keras"  # the README section
BATCHES, EPOCHS, T = 4, 4, 14  # 16 updates: the last two past total_steps
NAME, PEAK = "cosine+", 0.5


def value(x) -> float:
    return float(ops.convert_to_numpy(x))


class Recorder(keras.callbacks.Callback):
    """For each batch: the optimizer's iterations and learning_rate before and after the
    update, and the update of the single weight."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def read(self) -> tuple[float, float, float]:
        optimizer = self.model.optimizer
        weight = value(self.model.weights[0].value[0, 0])
        return value(optimizer.iterations), value(optimizer.learning_rate), weight

    def on_train_batch_begin(self, batch, logs=None):
        self.before = self.read()

    def on_train_batch_end(self, batch, logs=None):
        (count, rate, weight), after = self.before, self.read()
        row = {"count": count, "rate_before": rate, "count_after": after[0]}
        self.rows.append({**row, "rate_after": after[1], "applied": weight - after[2]})


def fit_and_record(schedule: AnnealingSchedule) -> list[dict[str, float]]:
    """Fit ``y = w x`` (one weight, from 0) by SGD with ``schedule``, recording each batch.

    With x = 1 and the target far below, the mean absolute error's gradient is exactly 1
    for every batch, so each update moves the weight by exactly (to float32) the rate it
    applied: what the optimizer did, not what it reports."""
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mae")
    x, y = np.ones((BATCHES, 1), "float32"), np.full((BATCHES, 1), -1e4, "float32")
    recorder = Recorder()
    model.fit(x, y, batch_size=1, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[recorder])
    return recorder.rows


def check_rows(rows: list[dict[str, float]]) -> None:
    """Update k applied the rate at k earlier updates; learning_rate read after it is k + 1's."""
    base = schedules.get(NAME)
    want = base(np.minimum(np.arange(len(rows) + 1), T) / T) * (PEAK / base.peak)
    counts = [row["count"] for row in rows]
    assert counts == list(range(BATCHES * EPOCHS))
    assert [row["count_after"] for row in rows] == [k + 1 for k in counts]
    applied = np.asarray([row["applied"] for row in rows])
    np.testing.assert_allclose(applied, want[:-1], rtol=0, atol=2e-6)  # w's float32 rounding
    assert np.all(np.abs(applied - want[1:])[:T] > 1e-3)  # not the next update's rate
    np.testing.assert_allclose([row["rate_before"] for row in rows], want[:-1], rtol=1e-5)
    np.testing.assert_allclose([row["rate_after"] for row in rows], want[1:], rtol=1e-5)
    assert applied[T] == pytest.approx(applied[-1], abs=2e-6)  # held past total_steps


def test_fit_applies_the_schedules_rate_at_each_update():
    check_rows(fit_and_record(AnnealingSchedule(NAME, T, peak=PEAK)))


def test_saved_model_loads_with_the_same_schedule_and_count(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = x @ np.asarray([1.0, -2.0, 0.5], "float32")
    schedule = AnnealingSchedule(schedules.get("sgdr"), total_steps=40, peak=0.05)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.9), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    restored = loaded.optimizer._learning_rate  # the schedule object (no public accessor)
    assert isinstance(restored, AnnealingSchedule) and restored is not schedule
    assert restored.get_config() == schedule.get_config()
    assert restored.schedule == schedule.schedule
    assert value(loaded.optimizer.iterations) == value(model.optimizer.iterations) == 12
    assert value(loaded.optimizer.learning_rate) == value(model.optimizer.learning_rate)
    for k in range(0, 45, 3):
        assert value(restored(k)) == value(schedule(k))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_config_is_plain_data_and_round_trips():
    schedule = AnnealingSchedule("str+", total_steps=100)
    config = schedule.get_config()
    assert json.loads(json.dumps(config)) == config
    assert config == {
        "schedule": schedules.get("str+").to_config(),
        "total_steps": 100,
        "peak": None,
    }
    again = AnnealingSchedule.from_config(config)
    assert again.get_config() == config and again.schedule == schedule.schedule
    serialized = keras.saving.serialize_keras_object(schedule)
    assert serialized["registered_name"] == "annealbench>AnnealingSchedule"
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert isinstance(revived, AnnealingSchedule) and revived.get_config() == config
    assert repr(schedule).startswith("AnnealingSchedule(Sequence(")
    assert repr(schedule).endswith("total_steps=100)")


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (("nope", 10), {}, "unknown schedule 'nope'"),
        ((0.1, 10), {}, "must be a name .* or a Schedule, got float"),
        (("sig+", 0), {}, "total_steps must be an integer >= 1, got 0"),
        (("sig+", 1.5), {}, "total_steps must be an integer >= 1, got 1.5"),
        (("sig+", 10), {"peak": -1.0}, "peak must be > 0"),
    ],
)
def test_bad_arguments_raise_a_schedule_error(args, kwargs, match):
    with pytest.raises(ScheduleError, match=match):
        AnnealingSchedule(*args, **kwargs)


JAX_SCRIPT = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
import keras, test_keras
from keras import ops
assert keras.backend.backend() == "jax"
schedule = test_keras.AnnealingSchedule(test_keras.NAME, test_keras.T, peak=test_keras.PEAK)
rows = test_keras.fit_and_record(schedule)
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
model.fit(ops.ones((4, 1)), ops.zeros((4, 1)), batch_size=2, epochs=1, verbose=0)
with tempfile.TemporaryDirectory() as folder:
    model.save(folder + "/m.keras")
    loaded = keras.saving.load_model(folder + "/m.keras").optimizer
print(json.dumps({"rows": rows, "config": loaded._learning_rate.get_config(),
                  "iterations": test_keras.value(loaded.iterations)}))
"""


def test_jax_backend_applies_and_saves_the_same_schedule():
    """Keras picks its backend once per process, so the JAX backend runs in another; its
    train step is jitted, so there the schedule sees a traced iteration count."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(TESTS)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    check_rows(result["rows"])
    assert result["config"] == AnnealingSchedule(NAME, T, peak=PEAK).get_config()
    assert result["iterations"] == 2


def test_docs_snippet_runs(tmp_path, monkeypatch, capsys):
    blocks = [readme_block(SNIPPET)]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    restored, schedule = namespace["restored"], namespace["schedule"]
    steps = schedule.total_steps
    assert value(restored.optimizer.iterations) == steps == 160  # 20 epochs of 8 batches
    assert restored.optimizer._learning_rate.get_config() == schedule.get_config()
    final = schedules.get("sig+")(1.0) * 0.5  # sig+'s last rate, its peak 0.1 scaled to 0.05
    printed = capsys.readouterr().out.split()
    assert float(printed[-1]) == pytest.approx(final, rel=1e-5)
    assert final == pytest.approx(0.00083, abs=5e-6)  # what the snippet's comment says
    assert float(printed[-2]) < 1.0  # trained: y's variance is about 140
