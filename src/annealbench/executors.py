"""Where a study's runs are trained: in this process, in local worker processes, or on Ray.

An executor asks the driver for work (``sink.next_claims()``: one run, or a group of runs
of one dataset and model; Ray asks ``sink.next_claim()`` for one run per task), trains it
with :func:`annealbench.training.fit` (one run, or a batched group), and
reports back per run (``sink.epoch``, ``sink.finished``, ``sink.lost``); only the driver
writes to the store. Workers never touch the store, so any executor resumes the same way:
an interrupted run continues from its checkpoint file, alone or in a group.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from annealbench.errors import ExecutorError, StudyWideError
from annealbench.training.config import RunOutcome
from annealbench.training.location import Location

if TYPE_CHECKING:  # pragma: no cover
    from annealbench.store import Claim

EXECUTORS = ("local", "ray")


class Sink(Protocol):
    """The driver side of an executor (see ``annealbench.study._Driver``)."""

    def next_claim(self) -> Claim | None: ...
    def next_claims(self) -> list[Claim]: ...
    def checkpoint(self, claim: Claim) -> Location: ...
    def epoch(self, claim: Claim, record: dict[str, Any]) -> None: ...
    def finished(self, claim: Claim, outcome: RunOutcome) -> None: ...
    def lost(self, claim: Claim, reason: str) -> None: ...
    def tick(self) -> None: ...


# -- one run, anywhere -------------------------------------------------------------------


@functools.cache
def _git_revision() -> str | None:
    """The git commit of the annealbench source tree, when it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """Where a run was trained: package versions, device, threads, host, git revision."""
    import numpy
    import torch

    import annealbench

    env: dict[str, Any] = {
        "annealbench": annealbench.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "git_revision": _git_revision(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env


class _ReportError(Exception):
    """Carries an exception raised by ``on_epoch`` out of training, unmistaken for its failure."""


def _train_guarded(
    configs: list[dict[str, Any]],
    checkpoints: list[str | Path | Location],
    *,
    batched: bool,
    data_root: str | None,
    on_epoch: Any,
    progress: bool,
) -> list[RunOutcome]:
    """Train runs (alone or as one batched group); one :class:`RunOutcome` per run, in order.

    An exception inside training becomes status "failed" with the error text for every run
    it stopped (``study_wide`` when every other run would fail the same way); checkpoints
    are kept so they resume when retried. An exception from ``on_epoch(index, record)``
    (the driver could not store the epoch: a full disk, a lost claim) is not the runs'
    fault and propagates.
    """
    from annealbench.training import RunConfig, fit, resolve_device

    def report(index: int, record: Any) -> None:
        try:
            on_epoch(index, dataclasses.asdict(record))
        except BaseException as exc:
            raise _ReportError() from exc

    env: dict[str, Any] | None = None
    try:
        runs = [RunConfig.from_dict(config) for config in configs]
        env = environment(str(resolve_device(runs[0].device)))
        results = fit(
            runs, batched=batched, data_root=data_root, checkpoint_paths=checkpoints,
            on_epoch=None if on_epoch is None else report, progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise
    except _ReportError as exc:
        raise exc.__cause__ from None
    except Exception as exc:  # the runs failed; the study carries on with the others
        error = traceback.format_exception_only(exc)[-1].strip()
        failed = RunOutcome("failed", error, None, env, isinstance(exc, StudyWideError))
        return [failed for _ in configs]
    return [RunOutcome.of(result, env) for result in results]


def execute(
    config: dict[str, Any],
    checkpoint: str | Path | Location,
    *,
    data_root: str | None = None,
    on_epoch: Any = None,
    progress: bool = False,
) -> RunOutcome:
    """Train one run (resuming from ``checkpoint``); ``on_epoch(record)`` gets plain dicts."""
    hook = None if on_epoch is None else (lambda _index, record: on_epoch(record))
    return _train_guarded(
        [config],
        [checkpoint],
        batched=False,
        data_root=data_root,
        on_epoch=hook,
        progress=progress,
    )[0]


def execute_group(
    configs: list[dict[str, Any]],
    checkpoints: list[str | Path | Location],
    *,
    data_root: str | None = None,
    on_epoch: Any = None,
    progress: bool = False,
) -> list[RunOutcome]:
    """Train runs of one dataset and model as one batched group; one outcome per run.

    Each run resumes from (and writes) its own checkpoint, so a group interrupted
    here continues batched or one run at a time. ``on_epoch(index, record)`` reports run
    ``configs[index]``'s epochs as plain dicts.
    """
    return _train_guarded(
        configs,
        checkpoints,
        batched=True,
        data_root=data_root,
        on_epoch=on_epoch,
        progress=progress,
    )


# -- executors ---------------------------------------------------------------------------


def default_threads(workers: int) -> int:
    """CPU threads per worker: ``$OMP_NUM_THREADS`` if set, else the cores less one, split.

    One core is left to the driver and the system: when another process takes a core,
    torch's threads wait on each other, and on a 2-core machine an nn2 epoch took 20x
    longer with 2 threads than with 1 (17.6 s against 0.9 s).
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]) // workers)
    return max(1, ((os.cpu_count() or 1) - 1) // workers)


def busy_cores(window_s: float = 0.5) -> float:
    """How many cores other processes keep busy now: /proc/stat sampled over ``window_s``
    (the 1-minute load average where there is no /proc/stat; it lags by a minute)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, total

    try:
        idle0, total0 = sample()
        time.sleep(window_s)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
    return busy * (os.cpu_count() or 1)


def auto_workers(device: str = "auto") -> int:
    """Local workers for ``--workers auto``: one per idle core on the CPU, else one.

    Idle cores are the cores less those busy now (:func:`busy_cores`), rounded to the
    nearest whole core, so a machine already busy with another job gets fewer workers,
    each of one thread (a busy core made two-thread runs up to 20x slower, see
    :func:`default_threads`). A GPU is one device: one worker drives it.
    """
    from annealbench.training.parts import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    cores = os.cpu_count() or 1
    return max(1, min(cores, math.floor(cores - busy_cores() + 0.5)))


class InlineExecutor:
    """Trains runs one after another in this process (``--workers 1``, the default)."""

    def __init__(self, threads: int | None, data_root: str | None, progress: bool) -> None:
        self.threads = threads
        self.data_root = data_root
        self.progress = progress

    def run_all(self, sink: Sink) -> None:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads or default_threads(1))
        try:
            while claims := sink.next_claims():
                if len(claims) == 1:
                    outcomes = [execute(
                        claims[0].config, sink.checkpoint(claims[0]), data_root=self.data_root,
                        on_epoch=functools.partial(sink.epoch, claims[0]), progress=self.progress,
                    )]  # fmt: skip
                else:
                    outcomes = execute_group(
                        [c.config for c in claims], [sink.checkpoint(c) for c in claims],
                        data_root=self.data_root, progress=self.progress,
                        on_epoch=lambda index, record, claims=claims: sink.epoch(
                            claims[index], record),
                    )  # fmt: skip
                for claim, outcome in zip(claims, outcomes, strict=True):
                    sink.finished(claim, outcome)
        finally:
            torch.set_num_threads(before)  # a library call leaves the caller's setting alone

    def stop(self) -> None:
        pass


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the driver dies (even by SIGKILL), so an
    orphan never keeps writing a checkpoint that a resumed study is using."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn: Any, threads: int, gpu: int | None, data_root: str | None,
                 parent: int) -> None:  # fmt: skip
    """A local worker process: train each run or group it is sent, reporting each run's
    epochs and outcome.

    Each worker talks to the driver over its own pipe, so a worker killed mid-message can
    break only its own channel, never block the others.
    """
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before prctl took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    torch.set_num_threads(threads)
    conn.send(("ready", None, None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        run_ids = [run_id for run_id, _, _ in task]
        if len(task) == 1:
            run_id, config, checkpoint = task[0]
            outcomes = [execute(
                config, checkpoint, data_root=data_root,
                on_epoch=lambda record, run_id=run_id: conn.send(("epoch", run_id, record)),
            )]  # fmt: skip
        else:
            outcomes = execute_group(
                [config for _, config, _ in task], [Path(c) for _, _, c in task],
                data_root=data_root,
                on_epoch=lambda i, record, ids=run_ids: conn.send(("epoch", ids[i], record)),
            )  # fmt: skip
        for run_id, outcome in zip(run_ids, outcomes, strict=True):
            conn.send(("finished", run_id, outcome))


class ProcessExecutor:
    """``--workers N`` spawned processes; CPU threads split between them, or one GPU each.

    Each worker trains one unit of work at a time: a run, or a batched group of runs. A
    worker that dies (killed, out of memory) is replaced, and its runs go back to the
    driver, which retries them from their checkpoints up to ``max_retries`` times.
    """

    def __init__(
        self, workers: int, threads: int | None, data_root: str | None, device: str = "auto"
    ) -> None:
        import multiprocessing

        import torch

        self.ctx = multiprocessing.get_context("spawn")
        self.workers = workers
        # One GPU per worker unless the command named a device itself (cpu, cuda:1, ...).
        self.gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
        self.threads = threads or default_threads(workers)
        self.data_root = data_root
        self.procs: list[Any] = [None] * workers
        self.conns: list[Any] = [None] * workers

    def _start(self, index: int) -> None:
        ours, theirs = self.ctx.Pipe()
        gpu = index % self.gpus if self.gpus else None
        proc = self.ctx.Process(
            target=_worker_main, name=f"annealbench-worker-{index}", daemon=True,
            args=(theirs, self.threads, gpu, self.data_root, os.getpid()),
        )  # fmt: skip
        proc.start()
        theirs.close()  # so the driver sees EOF when the worker dies
        self.procs[index], self.conns[index] = proc, ours

    def run_all(self, sink: Sink) -> None:
        from multiprocessing.connection import wait

        for index in range(self.workers):
            self._start(index)
        busy: dict[int, dict[int, Claim]] = {}  # worker index -> its unfinished runs by id
        idle: set[int] = set()
        exhausted = False
        while True:
            while idle and not exhausted:
                claims = sink.next_claims()
                if not claims:
                    exhausted = True
                    break
                index = idle.pop()
                busy[index] = {c.run_id: c for c in claims}
                self.conns[index].send(
                    [(c.run_id, c.config, str(sink.checkpoint(c))) for c in claims]
                )
            if exhausted and not busy:
                return
            ready = set(wait([*self.conns, *(p.sentinel for p in self.procs)], timeout=1.0))
            for index in range(self.workers):
                conn, proc = self.conns[index], self.procs[index]
                if conn not in ready and proc.sentinel not in ready:
                    continue
                try:
                    while conn.poll():
                        kind, run_id, payload = conn.recv()
                        claim = busy.get(index, {}).get(run_id)
                        if kind == "ready":
                            idle.add(index)
                        elif claim is not None and kind == "epoch":
                            sink.epoch(claim, payload)
                        elif claim is not None:  # finished
                            sink.finished(busy[index].pop(run_id), payload)
                            if not busy[index]:  # the whole unit of work is done
                                del busy[index]
                                idle.add(index)
                                exhausted = False  # a released run may be pending again
                except (EOFError, OSError):
                    pass  # died mid-message; handled below
                if not proc.is_alive():
                    proc.join()
                    idle.discard(index)
                    if index in busy:
                        reason = f"worker process died (exit code {proc.exitcode})"
                        for claim in busy.pop(index).values():
                            sink.lost(claim, reason)
                        exhausted = False
                    conn.close()
                    self._start(index)
            sink.tick()

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self.procs:
            if proc is None:
                continue
            if proc.is_alive():
                proc.kill()  # mid-epoch is fine: the last checkpoint is intact
            proc.join(timeout=10)
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.close()
        self.procs = [None] * self.workers
        self.conns = [None] * self.workers


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(
            "the ray executor needs Ray, an optional extra: pip install 'annealbench[ray]'"
        ) from exc
    return ray


def _ray_train(config: dict[str, Any], checkpoint: str, data_root: str | None,
               threads: int, import_path: list[str]) -> RunOutcome:  # fmt: skip
    """One run as a Ray task; the checkpoint must be on disk every retry can see.

    ``import_path`` is the driver's ``sys.path``: a user model ``mynets:build`` imports
    from the same folders (on another node, those that exist there).
    """
    import torch

    sys.path.extend(entry for entry in import_path if entry not in sys.path)
    torch.set_num_threads(threads)
    return execute(config, checkpoint, data_root=data_root)


class RayExecutor:
    """Each run is a Ray task with ``num_cpus``/``num_gpus``; only this driver writes results.

    A task whose worker dies is retried ``max_retries`` times by Ray and continues from its
    checkpoint, so on a multi-node cluster the checkpoint folder must be on shared disk.
    """

    def __init__(self, address: str | None, cpus_per_run: float, gpu_fraction: float | None,
                 max_retries: int, data_root: str | None) -> None:  # fmt: skip
        ray = _import_ray()
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                # Ray Client (ray://) takes fewer options; the dashboard only matters when
                # this driver starts a local instance.
                options: dict[str, Any] = {"log_to_driver": False}
                if address is None:
                    options["include_dashboard"] = False
                ray.init(address=address, **options)
            except Exception as exc:  # ConnectionError and Ray's own errors
                where = address or "a new local Ray instance"
                raise ExecutorError(f"cannot connect to Ray at {where}: {exc}") from exc
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0.0)
        self.num_gpus = gpu_fraction if gpu_fraction is not None else (1.0 if gpus else 0.0)
        if self.num_gpus and not gpus:
            raise ExecutorError("--gpu-fraction was given but the Ray cluster has no GPUs")
        if cpus_per_run > resources.get("CPU", 0.0):
            raise ExecutorError(
                f"--cpus-per-run {cpus_per_run} exceeds the cluster's {resources.get('CPU')} CPUs"
            )
        self.num_cpus = cpus_per_run
        by_cpu = resources.get("CPU", 1.0) // cpus_per_run
        by_gpu = gpus // self.num_gpus if self.num_gpus else by_cpu
        # Claim only as many runs as can train at once, so other drivers can take the rest.
        self.capacity = max(1, int(min(by_cpu, by_gpu)))
        self.threads = max(1, int(cpus_per_run))
        self.max_retries = max_retries
        self.data_root = data_root
        self.refs: dict[Any, Claim] = {}

    def run_all(self, sink: Sink) -> None:
        ray = self.ray
        task = ray.remote(_ray_train).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries
        )
        exhausted = False
        while True:
            while len(self.refs) < self.capacity and not exhausted:
                claim = sink.next_claim()
                if claim is None:
                    exhausted = True
                    break
                ref = task.remote(claim.config, str(sink.checkpoint(claim)), self.data_root,
                                  self.threads, list(sys.path))  # fmt: skip
                self.refs[ref] = claim
            if not self.refs:
                return
            ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=1.0)
            for ref in ready:
                claim = self.refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died max_retries + 1 times
                    sink.finished(claim, RunOutcome("failed", f"Ray task failed: {exc}"))
                else:
                    sink.finished(claim, outcome)
                exhausted = False
            sink.tick()

    def stop(self) -> None:
        for ref in list(self.refs):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self.refs.clear()
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
            self.started_here = False


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_options(
    name: str,
    *,
    workers: int | str = 1,
    threads: int | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpu_fraction: float | None = None,
    max_retries: int = 2,
) -> None:
    """Raise ExecutorError for options executor ``name`` cannot honour, before anything
    starts or is stored: the checks :func:`make` makes, without starting workers or Ray."""
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    if workers != "auto" and (not _whole(workers) or workers < 1):
        raise ExecutorError(f"--workers must be 'auto' or an integer >= 1, got {workers!r}")
    if threads is not None and (not _whole(threads) or threads < 1):
        raise ExecutorError(
            f"--threads must be an integer >= 1 (CPU threads per worker), got {threads!r}; "
            "leave it out for the default ((cores - 1) / workers)"
        )
    if not _whole(max_retries) or max_retries < 0:
        raise ExecutorError(
            f"--max-retries must be an integer >= 0 (0: never retry a run whose worker "
            f"died), got {max_retries!r}"
        )
    number = isinstance(cpus_per_run, (int, float)) and not isinstance(cpus_per_run, bool)
    if not number or not math.isfinite(cpus_per_run) or cpus_per_run <= 0:
        raise ExecutorError(f"--cpus-per-run must be a number > 0, got {cpus_per_run!r}")
    if gpu_fraction is not None and not 0 < gpu_fraction <= 1:
        raise ExecutorError(f"--gpu-fraction must be in (0, 1], got {gpu_fraction}")
    if name == "local" and (address is not None or gpu_fraction is not None):
        raise ExecutorError("--address and --gpu-fraction apply to --executor ray only")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        _import_ray()  # raises the install hint


def make(
    name: str,
    *,
    workers: int | str = 1,
    threads: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpu_fraction: float | None = None,
    max_retries: int = 2,
    progress: bool = False,
    device: str = "auto",
) -> Any:
    """The executor called ``name`` ("local" or "ray"); options checked by
    :func:`check_options`."""
    check_options(
        name, workers=workers, threads=threads, address=address, cpus_per_run=cpus_per_run,
        gpu_fraction=gpu_fraction, max_retries=max_retries,
    )  # fmt: skip
    root = None if data_root is None else str(data_root)
    if workers == "auto":
        workers = auto_workers(device) if name == "local" else 1
    if name == "local":
        if workers == 1:
            return InlineExecutor(threads, root, progress and sys.stderr.isatty())
        return ProcessExecutor(int(workers), threads, root, device)
    return RayExecutor(address, cpus_per_run, gpu_fraction, max_retries, root)


__all__ = [
    "EXECUTORS",
    "ExecutorError",
    "auto_workers",
    "check_options",
    "environment",
    "execute",
    "execute_group",
    "make",
]
