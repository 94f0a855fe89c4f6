"""Training on a CUDA GPU: one run, a batched group, bf16, channels-last, resume, and the
environment a run records. Where the arithmetic is the CPU's (fp32), the numbers agree with
the CPU's, or with the run trained alone, within float rounding.

These tests need a CUDA GPU and run on the project's GPU machine; on a machine without one
each is skipped with that reason (the only skip in the suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from annealbench import executors
from annealbench.training import RunConfig, RunResult, should_batch, train, train_group
from annealbench.training.loop import start

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: run on the GPU machine"
)

SUBSET = 512


def config(**overrides: object) -> RunConfig:
    base: dict = dict(dataset="fashion-mnist", model="nn2", method="sig+", seed=0, epochs=2)
    base.update(subset=SUBSET, device="cuda")
    base.update(overrides)
    return RunConfig(**base)


def assert_close(got: RunResult, expected: RunResult, rel: float, acc: float) -> None:
    """Same epochs and rates; losses within ``rel``, accuracies (%) within ``acc`` points
    (one of the 512 training images is 0.2 points)."""
    assert got.status == expected.status == "done"
    assert [r.epoch for r in got.epochs] == [r.epoch for r in expected.epochs]
    assert [r.lr for r in got.epochs] == [r.lr for r in expected.epochs]
    for g, e in zip(got.epochs, expected.epochs, strict=True):
        assert g.train_loss == pytest.approx(e.train_loss, rel=rel), (g, e)
        assert g.test_loss == pytest.approx(e.test_loss, rel=rel), (g, e)
        assert g.train_acc == pytest.approx(e.train_acc, abs=acc), (g, e)
        assert g.test_acc == pytest.approx(e.test_acc, abs=acc), (g, e)


def test_one_run_on_the_gpu_has_the_cpus_numbers() -> None:
    gpu = train(config())
    assert_close(gpu, train(config(device="cpu")), rel=1e-3, acc=0.5)


def test_a_gpu_run_records_the_gpu_in_its_environment(tmp_path: Path) -> None:
    outcome = executors.execute(config(epochs=1).to_dict(), tmp_path / "run.pt")
    assert outcome.status == "done", outcome.error
    env = outcome.environment
    assert env["device"].startswith("cuda")
    assert env["device_name"] == torch.cuda.get_device_name(0)
    assert env["cuda"] == torch.version.cuda


def test_a_batched_group_on_the_gpu_has_the_numbers_of_its_runs_alone() -> None:
    group = [config(method=m, seed=s) for m in ("sig+", "adam", "rms") for s in (0, 1)]
    assert should_batch(group)  # on a GPU from two runs on
    results = train_group(group)
    for result, run in zip(results, group, strict=True):
        assert result.config == run
        assert_close(result, train(run), rel=1e-3, acc=0.5)


def test_bf16_autocasts_the_forward_pass_and_keeps_fp32_weights() -> None:
    trainer = start([config(bf16=True, epochs=1)], batched=False)
    stepper = trainer.stepper
    steps = -(-SUBSET // 128)
    stepper.begin_epoch([[0.1] * steps])
    x, y = trainer.data.train_x[:128], trainer.data.train_y[:128]
    loss, logits = stepper.step(0, x.unsqueeze(0), y.unsqueeze(0))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss).all()
    assert all(p.dtype == torch.float32 for p in stepper.model.parameters())  # type: ignore[attr-defined]
    # A whole run: bf16 changes the numbers (README), a little.
    fp32, bf16 = train(config()), train(config(bf16=True))
    assert [r.train_loss for r in bf16.epochs] != [r.train_loss for r in fp32.epochs]
    assert_close(bf16, fp32, rel=0.05, acc=5.0)


def test_channels_last_lays_out_the_convolutions_and_trains_the_same_run() -> None:
    def conv_layouts(run: RunConfig) -> list[bool]:
        model = start([run], batched=False).stepper.model  # type: ignore[attr-defined]
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 2  # lenet4
        return [c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs]

    plain, last = config(model="lenet4"), config(model="lenet4", channels_last=True)
    assert conv_layouts(last) == [True, True]
    assert conv_layouts(plain)[1] is False  # (the first, of one input channel, is both)
    # cuDNN picks other kernels for the other layout (and may use TF32 for either).
    assert_close(train(last), train(plain), rel=1e-2, acc=2.0)


def test_a_gpu_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"

    class Stop(Exception):
        pass

    def stop_after_one(record: object) -> None:
        raise Stop

    full = train(config(epochs=3))
    with pytest.raises(Stop):
        train(config(epochs=3), checkpoint_path=checkpoint, on_epoch=stop_after_one)
    seen: list = []
    resumed = train(config(epochs=3), checkpoint_path=checkpoint, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [2, 3]
    assert_close(resumed, full, rel=1e-4, acc=0.5)


@pytest.mark.parametrize(("written", "resumed"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(
    tmp_path: Path, written: str, resumed: str
) -> None:
    checkpoint = tmp_path / "run.pt"

    class Stop(Exception):
        pass

    def stop_after_one(record: object) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(config(epochs=2, device=written), checkpoint_path=checkpoint, on_epoch=stop_after_one)
    result = train(config(epochs=2, device=resumed), checkpoint_path=checkpoint)
    assert_close(result, train(config(epochs=2, device=resumed)), rel=1e-3, acc=0.5)
