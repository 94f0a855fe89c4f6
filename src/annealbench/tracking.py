"""Mirror a study's runs to experiment trackers as they train (``annealbench run --log``).

``tensorboard:DIR``: one TensorBoard run per annealbench run, in the folder
``DIR/<study>/<dataset>-<model>-<method>-seed<k>-<run key[:8]>``, written by torch's
``SummaryWriter``: the epoch metrics as scalars (step = epoch), the configuration and the
study, dataset, model, method and seed as hparams, the status as a text.

``mlflow:URI``: one MLflow run per annealbench run, through ``mlflow.MlflowClient`` (no
active-run state), in the experiment named after the study: the configuration as params,
the study, dataset, model, method, seed, status and run key as tags, the epoch metrics
with step = epoch; the run ends FINISHED (done, diverged), FAILED, or KILLED with status
pending (given back by Ctrl-C). URI: a database (``sqlite:///mlruns.db``, relative to the
working folder; ``sqlite:////abs/path.db``; ``postgresql://...``) or a tracking server
(``http://host:5000``). A folder (``./mlruns``) only where the installed MLflow still
writes its file store: MLflow 3's refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``.

The study driver (:mod:`annealbench.study`) checks the specs before anything is stored
(:func:`check`), opens the loggers (:func:`open_all`), tells each of every stored epoch
(``epoch``) and run end (``finished``), and closes them; a logger that raises is dropped
with a warning and the study goes on. Loggers connect and write on a run's first report.

Each destination ends up holding what the store holds, whatever stopped the study:

- metrics: ``lr``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, and
  ``val_loss``, ``val_acc`` where the run has a validation split (a value that is None or
  NaN is left out); any other non-finite value (a diverged epoch) is logged as NaN, as the
  store reads it;
- the first time a logger meets a run it reads what the destination holds of it (the
  folder's events; the MLflow run found by its ``run_key`` tag and its metric history);
- an epoch reported again (a run resumed from an older checkpoint) replaces the one logged:
  TensorBoard's readers drop the steps from there on after a ``SessionLog.START`` at that
  step (what ``SummaryWriter(purge_step=...)`` writes). MLflow cannot delete a point: a
  step logged with the same value is skipped (resuming is deterministic on a CPU), one
  with another value is logged beside it (MLflow's latest value is then the store's);
- at a run's end, its full epoch list is compared with what the destination holds and
  the steps from the first difference on are written: a run resumed by a new process, or
  into a fresh destination, is complete when it finishes;
- runs finished before this command are mirrored by :func:`replay` (or
  :func:`finished_runs` told to each logger's ``finished``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annealbench.errors import StudyError

__all__ = ["INSTALL", "METRICS", "check", "finished_runs", "open_all", "replay"]

INSTALL = "pip install 'annealbench[tracking]'"
#: The metrics of an epoch, named as in the store; the last two only with a validation split.
METRICS = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")
_OPTIONAL = ("val_loss", "val_acc")
_FORMS = "give tensorboard:DIR or mlflow:URI (e.g. mlflow:sqlite:///mlruns.db)"
_BACKENDS = {"tensorboard": ("tensorboard", "TensorBoard"), "mlflow": ("mlflow", "MLflow")}


# -- specs -------------------------------------------------------------------------------


def parse(spec: str) -> tuple[str, str]:
    """``"mlflow:sqlite:///x.db"`` -> ``("mlflow", "sqlite:///x.db")``; StudyError if bad."""
    scheme, colon, target = spec.partition(":")
    scheme = scheme.strip().lower()
    if not colon or not scheme:
        raise StudyError(f"--log {spec}: {_FORMS}")
    if scheme not in _BACKENDS:
        raise StudyError(f"--log {spec}: unknown tracker {scheme!r}; {_FORMS}")
    if not target.strip():
        example = "tensorboard:out/tb" if scheme == "tensorboard" else "mlflow:sqlite:///mlruns.db"
        raise StudyError(f"--log {spec} names no destination; give one, e.g. {example}")
    return scheme, target.strip()


def check(specs: Sequence[str]) -> None:
    """Raise StudyError (a ValueError) naming the first bad ``--log`` spec and the fix: an
    unknown tracker, no destination, a backend not installed, a folder that cannot be
    written. Writes nothing."""
    from annealbench.study import check_folder

    for spec in specs:
        scheme, target = parse(spec)
        module, name = _BACKENDS[scheme]
        if importlib.util.find_spec(module) is None:
            raise StudyError(f"--log {spec}: {name} is not installed; {INSTALL}")
        if scheme == "tensorboard":
            check_folder(target, "--log tensorboard: folder")
        else:
            _check_mlflow(spec, target)


def _check_mlflow(spec: str, uri: str) -> None:
    from annealbench.study import check_folder

    if uri.startswith("sqlite:"):
        rest = uri.removeprefix("sqlite:")
        path = rest[3:].split("?")[0] if rest.startswith("///") else ""
        if path in ("", ":memory:"):
            raise StudyError(
                f"--log {spec}: an in-memory database keeps nothing; give a file, "
                "e.g. mlflow:sqlite:///mlruns.db"
            )
        check_folder(Path(path).parent, "--log mlflow: database folder")
    elif "://" not in uri or uri.startswith("file:"):  # a folder: MLflow's file store
        from mlflow import environment_variables as env  # what this MLflow allows

        allowed = getattr(env, "MLFLOW_ALLOW_FILE_STORE", None)
        if allowed is not None and not allowed.get():
            from mlflow import __version__

            raise StudyError(
                f"--log {spec}: MLflow {__version__} no longer writes to a folder (its file "
                "store is in maintenance mode); give a database such as "
                "mlflow:sqlite:///mlruns.db (made on first use), or set "
                "MLFLOW_ALLOW_FILE_STORE=true"
            )
        check_folder(uri.removeprefix("file://").removeprefix("file:"), "--log mlflow: folder")


def open_all(specs: Sequence[str], study: str) -> list[Any]:
    """One logger per distinct spec, for the runs of ``study``. Nothing is written (nor
    connected to) until a run reports: a destination that fails then is dropped with a
    warning by the driver, and the study goes on."""
    check(specs)
    loggers: list[Any] = []
    for spec in dict.fromkeys(specs):
        scheme, target = parse(spec)
        kind = TensorBoardLogger if scheme == "tensorboard" else MlflowLogger
        loggers.append(kind(target, study))
    return loggers


def finished_runs(store: Any, study: str) -> Iterator[tuple[Any, str, tuple[Any, ...]]]:
    """``(claim, status, epochs)`` of every run of ``study`` already finished in ``store``
    (an open :class:`annealbench.store.Store`), its stored epochs as mappings: what to tell
    the loggers' ``finished`` so that their destinations hold the runs trained before."""
    from annealbench.store.queue import Claim

    runs = store.runs_frame(study, tuning=True)
    runs = runs[runs["status"].isin(["done", "diverged", "failed"])]
    if runs.empty:
        return
    epochs = store.epochs_frame(study, tuning=True)
    by_run = {run_id: frame for run_id, frame in epochs.groupby("run_id")}
    for run in runs.itertuples():
        claim = Claim(int(run.run_id), run.run_key, "", json.loads(run.config), int(run.attempts))
        frame = by_run.get(run.run_id)
        yield claim, run.status, () if frame is None else tuple(frame.to_dict("records"))


def replay(loggers: Iterable[Any], store: Any, study: str) -> None:
    """Tell ``loggers`` of every run of ``study`` finished in ``store``
    (:func:`finished_runs`). Each reads the run's mirror and writes only what it lacks or
    holds differently: a fresh destination is filled in, a complete one is left as it is
    (but read: a few milliseconds a run). A logger's error propagates."""
    loggers = list(loggers)
    for claim, status, epochs in finished_runs(store, study):
        for logger in loggers:
            logger.finished(claim, status, epochs)


# -- what is logged ----------------------------------------------------------------------


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def metric_values(record: Any) -> dict[str, float]:
    """The metrics of one epoch record: non-finite values as NaN, validation only when the
    run has it (not None, not NaN)."""
    values = {}
    for name in METRICS:
        value = _field(record, name)
        if value is None:
            continue
        value = float(value)
        if not math.isfinite(value):
            if name in _OPTIONAL:
                continue
            value = math.nan
        values[name] = value
    return values


def flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's configuration as flat scalars (nested tables as ``a.b``, lists as JSON),
    without ``device``: where this command trains, not what the run is."""
    flat: dict[str, Any] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                add(f"{prefix}.{key}", inner)
        elif isinstance(value, (list, tuple)):
            flat[prefix] = json.dumps(value)
        else:
            flat[prefix] = value

    for key, value in config.items():
        if key != "device":
            add(key, value)
    return flat


def run_tags(study: str, config: Mapping[str, Any]) -> dict[str, str]:
    """study, dataset, model, method and seed, as strings."""
    return {"study": study, **{k: str(config.get(k)) for k in ("dataset", "model", "method",
                                                                  "seed")}}  # fmt: skip


def run_name(claim: Any) -> str:
    """``fashion-mnist-nn2-sig+-seed0-1a2b3c4d``: readable, and unique in its study."""
    c = claim.config
    dataset = str(c.get("dataset", "")).rstrip("/").rsplit("/", 1)[-1]
    name = f"{dataset}-{c.get('model')}-{c.get('method')}-seed{c.get('seed')}-{claim.run_key[:8]}"
    return _safe(name)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+=@-]", "_", name)


def _same(a: float | None, b: float) -> bool:
    return a is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _first_difference(
    held: Mapping[str, Mapping[int, float]], wanted: Mapping[int, Mapping[str, float]]
) -> int | None:
    """The first step at which what a destination holds (``held[metric][step]``) differs
    from the run's epochs (``wanted[step][metric]``): a value missing, extra or different.
    None when they agree."""
    steps = sorted(set(wanted) | {s for series in held.values() for s in series})
    for step in steps:
        values = wanted.get(step, {})
        logged = {k: series[step] for k, series in held.items() if step in series}
        if logged.keys() != values.keys() or not all(
            _same(logged[k], v) for k, v in values.items()
        ):
            return step
    return None


@dataclass
class _Run:
    """What a logger knows of one run's mirror."""

    claim: Any
    held: dict[str, dict[int, float]]  # metric -> step -> value, as the destination holds it
    status: str | None = None  # the mirror's status when found (None: new or unknown)
    handle: Any = None  # the backend's: a TensorBoard folder, an MLflow run id
    writer: Any = None  # TensorBoard: made on the first write
    running: bool = False  # an epoch of it came to this logger

    @property
    def top(self) -> int:
        return max((max(series) for series in self.held.values() if series), default=0)


class _Logger:
    """What the driver calls, shared by the backends: one :class:`_Run` per open run."""

    scheme = ""

    def __init__(self, target: str, study: str) -> None:
        self.target = target
        self.study = study
        self.runs: dict[str, _Run] = {}

    def __str__(self) -> str:  # a password in a database URI is not printed
        target = re.sub(r"://([^:/@]+):[^@/]+@", r"://\1:***@", self.target)
        return f"{self.scheme}:{target}"

    def _run(self, claim: Any) -> _Run:
        if claim.run_key not in self.runs:
            self.runs[claim.run_key] = self._open(claim)
        return self.runs[claim.run_key]

    def epoch(self, claim: Any, record: Any) -> None:
        run = self._run(claim)
        if not run.running:
            self._start(run)
            run.running = True
        self._write(run, int(_field(record, "epoch")), metric_values(record))

    def finished(self, claim: Any, status: str, epochs: Sequence[Any] | None) -> None:
        """Write what the mirror lacks or holds differently of ``epochs`` (the full list;
        None for a failed run: what was logged stays), then its status."""
        run = self._run(claim)
        if epochs is not None:
            wanted = {int(_field(r, "epoch")): metric_values(r) for r in epochs}
            first = _first_difference(run.held, self._comparable(wanted))
            if first is not None:
                self._rewind(run, first)
                for step in sorted(s for s in wanted if s >= first):
                    self._write(run, step, wanted[step])
        del self.runs[claim.run_key]
        self._end(run, status)

    def close(self) -> None:
        """Runs still open were given back to the store (Ctrl-C): their mirrors say pending."""
        while self.runs:
            self._end(self.runs.popitem()[1], "pending")

    def _comparable(self, wanted: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
        return wanted

    def _rewind(self, run: _Run, step: int) -> None:
        """Drop what the mirror holds from ``step`` on, where the backend can."""

    def _open(self, claim: Any) -> _Run:
        raise NotImplementedError

    def _start(self, run: _Run) -> None:
        raise NotImplementedError

    def _write(self, run: _Run, step: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def _end(self, run: _Run, status: str) -> None:
        raise NotImplementedError


# -- TensorBoard -------------------------------------------------------------------------


class TensorBoardLogger(_Logger):
    """One log folder per run (:meth:`folder`), written by
    ``torch.utils.tensorboard.SummaryWriter``.

    TensorBoard's readers (the Python event accumulator, the Rust data server) drop the
    points at and after a step written again, after a ``SessionLog.START`` at that step
    (what ``SummaryWriter(purge_step=...)`` writes): re-reported and rewritten epochs
    replace the old ones. A folder's event files are read in name order, which starts with
    the second each was made: a new one is never made in the second of one there."""

    scheme = "tensorboard"

    def folder(self, claim: Any) -> Path:
        return Path(self.target).expanduser() / _safe(self.study) / run_name(claim)

    def _open(self, claim: Any) -> _Run:
        folder = self.folder(claim)
        held, status = read_run(folder) if _event_files(folder) else ({}, None)
        return _Run(claim, held, status, handle=folder)

    def _start(self, run: _Run) -> None:
        pass

    def _writer(self, run: _Run) -> Any:
        if run.writer is None:
            from tensorboard.plugins.hparams import summary_v2
            from torch.utils.tensorboard import SummaryWriter

            stamps = _event_files(run.handle)
            until = min(max(stamps, default=0) + 1, time.time() + 1.5)  # a skewed clock too
            while time.time() < until:
                time.sleep(0.05)
            run.writer = SummaryWriter(str(run.handle))
            if not stamps:
                config = run.claim.config
                hparams = {**run_tags(self.study, config), **flat_config(config)}
                hparams = {k: v for k, v in hparams.items() if v is not None}
                run.writer.file_writer.add_summary(summary_v2.hparams_pb(hparams))
        return run.writer

    def _rewind(self, run: _Run, step: int) -> None:
        if step > run.top:
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        start = Event(step=step, session_log=SessionLog(status=SessionLog.START))
        self._writer(run).file_writer.add_event(start)
        for series in run.held.values():
            for stale in [s for s in series if s >= step]:
                del series[stale]

    def _write(self, run: _Run, step: int, values: Mapping[str, float]) -> None:
        self._rewind(run, step)  # an epoch again: what was logged from it on is stale
        writer = self._writer(run)
        for name, value in values.items():
            writer.add_scalar(name, value, global_step=step)
        writer.flush()
        for name, value in self._comparable({step: dict(values)})[step].items():
            run.held.setdefault(name, {})[step] = value

    def _comparable(self, wanted: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
        import numpy as np  # TensorBoard keeps scalars as float32

        return {s: {k: float(np.float32(v)) for k, v in vs.items()} for s, vs in wanted.items()}

    def _end(self, run: _Run, status: str) -> None:
        if status != run.status or run.writer is not None:
            self._writer(run).add_text("status", status, global_step=run.top)
        if run.writer is not None:
            run.writer.close()


def _event_files(folder: Path) -> list[int]:
    """The creation seconds of the event files in ``folder`` (from their names)."""
    names = [p.name.split(".") for p in folder.glob("events.out.tfevents.*")]
    return [int(n[3]) for n in names if len(n) > 3 and n[3].isdigit()]


def read_run(folder: str | Path) -> tuple[dict[str, dict[int, float]], str | None]:
    """What a TensorBoard run folder holds, as TensorBoard shows it (purged steps dropped):
    its scalars ``{tag: {step: value}}`` and its last status text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    quiet = logging.getLogger("tensorboard")  # a purge is expected here, not news
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        acc.Reload()
    finally:
        quiet.setLevel(level)
    tags = acc.Tags()
    scalars = {
        tag: {event.step: float(event.value) for event in acc.Scalars(tag)}
        for tag in tags["scalars"]
    }
    status = None
    if "status/text_summary" in tags["tensors"]:
        events = acc.Tensors("status/text_summary")
        status = events[-1].tensor_proto.string_val[0].decode() if events else None
    return scalars, status


# -- MLflow ------------------------------------------------------------------------------


class MlflowLogger(_Logger):
    """One MLflow run per annealbench run, through ``mlflow.MlflowClient`` (no active-run
    state), in the experiment named after the study: found again by its ``run_key`` tag,
    so a resumed or retried run continues its own."""

    scheme = "mlflow"
    _ENDED = {"done": "FINISHED", "diverged": "FINISHED", "failed": "FAILED"}

    def __init__(self, target: str, study: str) -> None:
        super().__init__(target, study)
        self.client: Any = None
        self.experiment = ""

    def _connect(self) -> Any:
        if self.client is None:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException

            client = MlflowClient(tracking_uri=self.target)
            experiment = client.get_experiment_by_name(self.study)
            if experiment is None:
                try:
                    self.experiment = client.create_experiment(self.study)
                except MlflowException:  # another process made it meanwhile
                    experiment = client.get_experiment_by_name(self.study)
                    if experiment is None:
                        raise
            if experiment is not None:
                if experiment.lifecycle_stage != "active":
                    raise RuntimeError(
                        f"experiment {self.study!r} is deleted there; restore it "
                        "(mlflow experiments restore) or remove it for good (mlflow gc)"
                    )
                self.experiment = experiment.experiment_id
            self.client = client
        return self.client

    def _open(self, claim: Any) -> _Run:
        from mlflow.entities import Param

        client = self._connect()
        found = client.search_runs(
            [self.experiment], f"tags.run_key = '{claim.run_key}'", max_results=1,
            order_by=["attributes.start_time ASC"],
        )  # fmt: skip
        if found:
            info, data = found[0].info, found[0].data
            held = {}  # a step logged twice: its latest value, as MLflow shows it
            for key in data.metrics:
                history = sorted(client.get_metric_history(info.run_id, key),
                                 key=lambda m: m.timestamp)  # fmt: skip
                held[key] = {m.step: m.value for m in history}
            status = data.tags.get("status") if info.status != "RUNNING" else None
            params = data.params
        else:
            tags = {**run_tags(self.study, claim.config), "run_key": claim.run_key}
            info = client.create_run(self.experiment, run_name=run_name(claim), tags=tags).info
            held, status, params = {}, None, {}
        new = [Param(k[:250], str(v)[:6000]) for k, v in flat_config(claim.config).items()
               if k[:250] not in params]  # fmt: skip
        for at in range(0, len(new), 100):  # MLflow takes 100 params a call
            client.log_batch(info.run_id, params=new[at : at + 100])
        return _Run(claim, held, status, handle=info.run_id)

    def _start(self, run: _Run) -> None:
        self.client.update_run(run.handle, status="RUNNING")
        self.client.set_tag(run.handle, "status", "running")
        run.status = "running"

    def _write(self, run: _Run, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        new = [Metric(k, v, now, step) for k, v in values.items()
               if not _same(run.held.get(k, {}).get(step), v)]  # fmt: skip
        if new:
            self.client.log_batch(run.handle, metrics=new)
        for metric in new:
            run.held.setdefault(metric.key, {})[step] = metric.value

    def _end(self, run: _Run, status: str) -> None:
        if status != run.status:
            self.client.set_tag(run.handle, "status", status)
            self.client.set_terminated(run.handle, self._ENDED.get(status, "KILLED"))
