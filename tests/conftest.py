"""Test-wide settings.

Every test, and every ``annealbench`` subprocess a test starts, uses one CPU thread: the
2-core machines this suite runs on are shared, and OpenMP threads that spin while another
process holds the other core slow a run down many times over. One thread everywhere also
means runs compared bit for bit (in-process against a subprocess) use the same kernels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def local_s3() -> Iterator[str]:
    """A real S3 API on this machine (moto's server) with one bucket; yields ``s3://bucket``.

    ``AWS_ENDPOINT_URL`` points every S3 client of this process, and of the processes it
    starts from then on (Ray nodes, workers), at it.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="annealbench-test")
    try:
        yield "s3://annealbench-test"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(autouse=True)
def _registries_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers (methods, models, datasets) is gone after it: no test sees
    another's names."""
    from annealbench import data, methods, models

    monkeypatch.setattr(methods, "_USER", dict(methods._USER))
    monkeypatch.setattr(models, "_USER", dict(models._USER))
    monkeypatch.setattr(data, "REGISTRY", dict(data.REGISTRY))


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str, language: str = "python") -> str:
    """The first ```LANGUAGE block of README.md after the line ``heading``: the tests of a
    documented example check its values on the very code the README shows."""
    text = README.read_text(encoding="utf-8")
    assert f"\n{heading}\n" in text, f"README.md has no heading {heading!r}"
    after = text.split(f"\n{heading}\n", 1)[1]
    match = re.search(rf"^```{language}\n(.*?)^```", after, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md: no ```{language} block after {heading!r}"
    return match[1]


#: Test files that start Ray: under pytest-xdist they share one worker (one xdist group),
#: since a test that finds Ray's task processes by their title must see only its own.
RAY_FILES = frozenset({
    "test_executors.py", "test_methods.py", "test_ray_cluster.py", "test_study.py",
    "test_study_batched.py", "test_user_workloads.py", "test_validation.py",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``make test`` runs ``--dist loadgroup``: each file is one group (its module fixtures
    computed once), except that the files starting Ray form one group together."""
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("ray" if name in RAY_FILES else name))
