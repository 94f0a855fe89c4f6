"""A study on a Ray cluster of three nodes that loses one of them mid-run.

A head (no CPUs: it only schedules) and two worker nodes of one CPU each run on this
machine (``ray.cluster_utils.Cluster``); checkpoints live in a local S3 (moto), the one
place both worker nodes reach. A worker node is removed while it trains a run that has
stored at least one epoch: Ray retries that run on the other node, which continues from
the run's checkpoint, and the study's numbers equal those of a local study.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from annealbench import study as study_mod
from annealbench.store import Store
from annealbench.study import Study, run_study

METRICS = ["lr", "train_loss", "train_acc", "test_loss", "test_acc"]
GRID = Study(
    "cluster",
    ("fashion-mnist",),
    ("nn2",),
    ("sig+", "adam"),
    1,
    {"epochs": 5, "subset": 32_768, "device": "cpu"},
)


def numbers(store: Path) -> pd.DataFrame:
    with Store(store, readonly=True) as s:
        epochs = s.epochs_frame()
    keys = ["method", "seed", "epoch"]
    return epochs[keys + METRICS].sort_values(keys).reset_index(drop=True)


@pytest.fixture()
def cluster(local_s3: str):
    """Head + two one-CPU worker nodes; started after the S3 endpoint is in the env."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def checkpoints(prefix: str) -> int:
    """How many checkpoints the object store holds under ``prefix``."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(prefix)
    return len(fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)))


def done(store: Path) -> int:
    if not store.exists():
        return 0
    with Store(store, readonly=True) as s:
        return int((s.runs_frame()["status"] == "done").sum())


def test_losing_a_node_mid_run_resumes_the_run_on_another_from_its_checkpoint(
    cluster, local_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head, workers = cluster
    outcomes: dict[int, object] = {}
    store_outcome = study_mod._Driver.finished

    def logged(self, claim, outcome) -> None:
        outcomes[claim.run_id] = outcome
        store_outcome(self, claim, outcome)

    monkeypatch.setattr(study_mod._Driver, "finished", logged)
    store = tmp_path / "cluster.sqlite"
    prefix = f"{local_s3}/{uuid.uuid4().hex}"
    result: list = []
    driver = threading.Thread(
        target=lambda: result.append(
            run_study(GRID, store, executor="ray", address=head.address, checkpoint_dir=prefix,
                      max_retries=2, progress=False, batched="off")
        )
    )  # fmt: skip
    driver.start()
    removed = False
    deadline = time.monotonic() + 240
    while not removed and time.monotonic() < deadline and driver.is_alive():
        time.sleep(0.05)
        # Both runs are training (one on each worker node), each with a checkpoint in the
        # object store and neither finished: the node removed holds a run mid-way.
        if checkpoints(prefix) == 2 and done(store) == 0 and not outcomes:
            head.remove_node(workers[0])
            removed = True
    driver.join(timeout=300)
    assert removed, "the two runs were never seen training at once past their first epoch"
    assert not driver.is_alive() and result and result[0].counts == {"done": 2}
    # The run that lost its node was retried (by Ray, on the other node) and continued
    # from its checkpoint in the object store, not from epoch 1.
    resumed = [o.resumed_from for o in outcomes.values()]
    assert sorted(resumed)[0] == 0 and sorted(resumed)[1] >= 1, resumed
    local = tmp_path / "local.sqlite"
    run_study(GRID, local, progress=False, batched="off")
    pd.testing.assert_frame_equal(numbers(store), numbers(local))
