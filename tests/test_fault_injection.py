"""Kill a study again and again at random moments; resumed each time, it ends as if never hurt.

A fixed random seed picks, for each attempt, where the study dies: SIGKILL of the driver or
of a worker process after a random delay, SIGINT (Ctrl-C), or a SIGKILL from inside the
process during a checkpoint write (after the temporary file is written, before it is renamed
into place) or during a store commit (inside the write transaction, before COMMIT). After
each death the same command resumes the study. The final store must hold exactly the
numbers of an uninterrupted study.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from annealbench.store import Store
from annealbench.study import Study, run_study

METRICS = ["lr", "train_loss", "train_acc", "test_loss", "test_acc"]
GRID = ["--datasets", "fashion-mnist", "--models", "nn2", "--methods", "sig+,adam",
        "--trials", "2", "--epochs", "4", "--subset", "8192", "--threads", "1",
        "--no-progress", "--batched", "off"]  # fmt: skip
TINY = Study("default", ("fashion-mnist",), ("nn2",), ("sig+", "adam"), 2,
             {"epochs": 4, "subset": 8192})  # fmt: skip

# Runs `annealbench` after arming one fault: the K-th fsync (a checkpoint's temporary file is
# written, not yet renamed) or the K-th store write transaction (before its COMMIT) kills
# the process with SIGKILL, as a power cut would.
ARMED = """
import contextlib, os, signal, sys
mode, k = sys.argv[1], int(sys.argv[2])
count = [0]
def due():
    count[0] += 1
    if count[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
if mode == "checkpoint":
    fsync = os.fsync
    def fsync_then_die(fd):
        fsync(fd)
        due()
    os.fsync = fsync_then_die
elif mode == "commit":
    from annealbench.store import schema
    write = schema.StoreFile._write
    @contextlib.contextmanager
    def write_then_die(self):
        with write(self) as conn:
            yield conn
            due()
    schema.StoreFile._write = write_then_die
from annealbench.cli import main
sys.argv = ["annealbench", *sys.argv[3:]]
main()
"""


def start(args: list[str], mode: str = "none", k: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", ARMED, mode, str(k), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def worker_of(proc: subprocess.Popen) -> int:
    """A worker process of the study, once it has started training."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(children(proc.pid)) >= 2:
            time.sleep(1.0)  # into its first run
            return children(proc.pid)[0]
        time.sleep(0.1)
    raise AssertionError("the study started no worker processes")


def numbers(store: Path) -> pd.DataFrame:
    with Store(store, readonly=True) as s:
        epochs = s.epochs_frame()
        runs = s.runs_frame()
    assert set(runs["status"]) == {"done"}, runs[["method", "seed", "status", "error"]]
    keys = ["method", "seed", "epoch"]
    return epochs[keys + METRICS].sort_values(keys).reset_index(drop=True)


def finished(store: Path) -> bool:
    if not store.exists():
        return False
    with Store(store, readonly=True) as s:
        runs = s.runs_frame()
    return len(runs) == 4 and set(runs["status"]) == {"done"}


def test_random_kills_then_resume_equal_the_uninterrupted_study(tmp_path: Path) -> None:
    reference = tmp_path / "reference.sqlite"
    run_study(TINY, reference, progress=False, batched="off")
    store = tmp_path / "hurt.sqlite"
    rng = random.Random(20261129)
    modes = ["driver", "sigint", "checkpoint", "commit"]
    # Each fault twice in a random order; a worker's death last, since the driver survives
    # it and finishes the study.
    plan = rng.sample(modes, len(modes)) + rng.sample(modes, len(modes)) + ["worker"]
    seen: list[str] = []
    for mode in plan:
        if finished(store):
            break
        workers = "2" if mode == "worker" else "1"
        args = ["run", *GRID, "--workers", workers, "--store", str(store)]
        if mode in ("checkpoint", "commit"):
            proc = start(args, mode, rng.randint(1, 6))
        else:
            proc = start(args)
            time.sleep(rng.uniform(2.5, 4.0))  # past start-up (imports, data): mid-training
            if mode == "driver":
                proc.send_signal(signal.SIGKILL)
            elif mode == "sigint":
                proc.send_signal(signal.SIGINT)
            else:
                os.kill(worker_of(proc), signal.SIGKILL)
                mode = "worker:killed"  # the driver survives it: retried from a checkpoint
        proc.wait(timeout=60)
        seen.append(f"{mode}:{proc.returncode}")
    resume = start(["run", *GRID, "--workers", "1", "--store", str(store)])
    _, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    hurt = [s for s in seen if not s.endswith(":0") or "killed" in s]
    assert len(hurt) >= 6 and {s.split(":")[0] for s in hurt} == {*modes, "worker"}, seen
    pd.testing.assert_frame_equal(numbers(store), numbers(reference))
    print("faults:", ", ".join(seen))
