"""Checkpoints: where they live (local, object store), what a full disk does, what is refused.

The object store is a real S3 API served on this machine by moto's server (reached through
pyarrow's S3 filesystem); the full disk
is a real 1 MiB tmpfs mounted for the test (the suite runs as root, as CI does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from annealbench.errors import CheckpointError, StudyWideError
from annealbench.study import Study, run_study
from annealbench.training import RunConfig, train
from annealbench.training.checkpoint import FORMAT, NoSpaceError, load_checkpoint, save_atomic
from annealbench.training.location import Location, join


def config(**overrides: object) -> RunConfig:
    base = {"dataset": "fashion-mnist", "model": "nn2", "method": "sig+", "epochs": 2}
    return RunConfig(**{**base, "subset": 256, "device": "cpu", **overrides})


def numbers(result) -> list[tuple]:
    return [dataclasses.astuple(r)[:6] for r in result.epochs]


# --------------------------------------------------------------------------- object store


@pytest.fixture()
def s3(local_s3: str) -> str:
    return local_s3


def test_a_run_resumes_from_an_object_store_checkpoint_bit_for_bit(s3: str) -> None:
    where = join(f"{s3}/{uuid.uuid4().hex}", "run.pt")
    assert where.remote and not where.exists()
    whole = train(config(epochs=3))

    class Stop(Exception):
        pass

    def stop_after_first(record) -> None:
        if record.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config(epochs=3), checkpoint_path=where.target, on_epoch=stop_after_first)
    assert where.exists()
    saved = load_checkpoint(where, config(epochs=3))  # weights_only, checked against the run
    assert saved["epoch"] == 1 and saved["format"] == FORMAT
    resumed = train(config(epochs=3), checkpoint_path=where.target)
    assert numbers(resumed) == numbers(whole)
    where.remove()
    assert not where.exists()


def test_a_study_keeps_its_checkpoints_in_the_object_store(s3: str, tmp_path: Path) -> None:
    prefix = f"{s3}/{uuid.uuid4().hex}"
    study = Study("s3", ("fashion-mnist",), ("nn2",), ("sig+", "adam"), 1,
                  {"epochs": 2, "subset": 256, "device": "cpu"})  # fmt: skip
    outcome = run_study(study, tmp_path / "s.sqlite", checkpoint_dir=prefix, progress=False,
                        batched="off")  # fmt: skip
    assert outcome.counts == {"done": 2}
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(prefix)
    left = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    assert left == []  # finished runs' checkpoints are removed


def test_an_object_is_published_whole(s3: str) -> None:
    where = Location(f"{s3}/{uuid.uuid4().hex}/run.pt")
    save_atomic({"format": FORMAT, "x": torch.arange(4)}, where)
    first = where.read_bytes()
    save_atomic({"format": FORMAT, "x": torch.arange(400_000)}, where)
    second = where.read_bytes()
    assert len(second) > len(first)
    assert torch.equal(torch.load(__import__("io").BytesIO(second))["x"], torch.arange(400_000))


# --------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                   check=True)  # fmt: skip
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_one_clear_study_wide_error(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "small") as small:
        where = small / "run.pt"
        with pytest.raises(NoSpaceError) as caught:
            train(config(), checkpoint_path=where)
        message = str(caught.value)
        assert "no space left on the device of" in message and str(small) in message
        assert re.search(r"needs about \d+\.\d MiB", message) and "--checkpoint-dir" in message
        assert isinstance(caught.value, StudyWideError)
        assert list(small.iterdir()) == []  # no half-written file left behind


def test_a_full_checkpoint_disk_stops_the_study(tmp_path: Path) -> None:
    study = Study("full", ("fashion-mnist",), ("nn2",), ("sig+", "adam", "0.1"), 1,
                  {"epochs": 2, "subset": 256, "device": "cpu"})  # fmt: skip
    with tiny_disk(tmp_path / "small") as small:
        outcome = run_study(study, tmp_path / "s.sqlite", checkpoint_dir=small, progress=False,
                            batched="off")  # fmt: skip
    assert outcome.fatal is not None and "no space left" in outcome.fatal
    assert len(outcome.failures) == 1  # the study stopped after the first run's failure
    assert outcome.counts.get("pending") == 2


# --------------------------------------------------------------------------- refused


def test_a_checkpoint_whose_records_disagree_with_its_run_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "run.pt"
    train(config(epochs=3), checkpoint_path=where)
    state = torch.load(where, weights_only=True)
    state["records"] = state["records"] + state["records"][:2]  # 5 records for 3 epochs
    state["epoch"] = 5
    torch.save(state, where)
    with pytest.raises(CheckpointError, match="holds 5 epochs for a run of 3"):
        train(config(epochs=3), checkpoint_path=where)
    state["records"], state["epoch"] = state["records"][:2], 3
    torch.save(state, where)
    with pytest.raises(CheckpointError, match="says epoch 3 but holds 2 records"):
        train(config(epochs=3), checkpoint_path=where)


def test_a_checkpoint_path_that_is_not_a_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        train(config(), checkpoint_path=fifo)


def test_a_checkpoint_holds_nothing_tied_to_its_device(tmp_path: Path) -> None:
    """The augmentation generator is reseeded each epoch from the run's seed, so a GPU's
    checkpoint resumes on the CPU and back: no device-specific generator state is saved."""
    from annealbench.training.loop import augment_seed

    where = tmp_path / "run.pt"
    train(config(epochs=1), checkpoint_path=where)
    state = torch.load(where, weights_only=True)
    assert "aug_gen" not in state and state["order_gen"].device.type == "cpu"
    seeds = {augment_seed(seed, epoch) for seed in range(10) for epoch in range(100)}
    assert len(seeds) == 1000  # every (trial, epoch) draws its own augmentation
