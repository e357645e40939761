"""`run_batch`: run every job of a batch on an executor, publish each job's files once, report.

    from graphgen.batch import run_batch, spec_from_sweeps

    result = run_batch("workflows/kolors_txt2img.json", spec_from_sweeps(["seed=1..16"]),
                       executor="local", output_dir="out", overrides={"steps": 20})
    result.succeeded, result.failed, result.folder

The executor is `"local"` (one Engine, models loaded once, one job at a time), `"ray"` (one Ray
actor per GPU, each with its own Engine: see `graphgen.batch.ray_executor`) or an executor object
(`LocalExecutor(engine)`, `RayExecutor(...)`) that may be reused across batches so that its workers
keep their models loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from graphgen.batch.events import (
    BatchFinished,
    BatchStarted,
    JobFinished,
    JobNodeEvent,
    JobSkipped,
    JobStarted,
    WorkerLost,
    WorkerReady,
    WorkerRestarted,
)
from graphgen.batch.spec import (
    BatchSpec,
    Job,
    as_jobs,
    check_batch_name,
    default_batch_name,
    json_values,
)
from graphgen.batch.store import BatchStore, make_manifest, rebase_ui
from graphgen.events import Event


class BatchError(Exception):
    """A batch cannot start (bad executor settings, Ray missing or unreachable, outputs in the way)."""


@dataclass
class JobResult:
    """What became of one job.

    Attributes:
        job: The job (name, index, overrides).
        status: `success`, `failed`, `invalid`, `cancelled`, `done_before` (skipped by resume) or
            `not_run` (the batch stopped first).
        worker: The worker that ran it.
        files: The files written for it (in its job folder).
        ui: What its output nodes reported, paths pointing at the published files.
        error: Why it failed.
        executed, cached: Nodes that ran / came from the worker's cache.
        model_loads: Models the worker had loaded when the job finished.
        seconds: Time the job took on its worker.
    """

    job: Job
    status: str
    worker: str = ""
    files: list[Path] = field(default_factory=list)
    ui: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    model_loads: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("success", "done_before")


@dataclass
class WorkerStats:
    worker: str
    pid: int = 0
    node: str = ""
    gpus: list[str] = field(default_factory=list)
    jobs: int = 0
    failed: int = 0
    model_loads: int = 0
    restarts: int = 0
    lost: bool = False
    busy_seconds: float = 0.0


@dataclass
class BatchResult:
    """The whole batch: one `JobResult` per job, in job order, and per-worker counts."""

    name: str
    folder: Path
    status: str = "success"
    jobs: list[JobResult] = field(default_factory=list)
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    seconds: float = 0.0
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def succeeded(self) -> list[JobResult]:
        return [r for r in self.jobs if r.status == "success"]

    @property
    def done_before(self) -> list[JobResult]:
        return [r for r in self.jobs if r.status == "done_before"]

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.jobs if r.status in ("failed", "invalid")]

    @property
    def not_run(self) -> list[JobResult]:
        return [r for r in self.jobs if r.status in ("not_run", "cancelled")]

    def files(self) -> list[Path]:
        return [f for r in self.jobs for f in r.files]


class BatchExecutor(Protocol):
    """Runs jobs on workers; see `LocalExecutor` and `RayExecutor`."""

    kind: str

    def start(self, run: BatchRun) -> None: ...

    def run(self, run: BatchRun, jobs: list[Job]) -> None: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class BatchRun:
    """One batch in progress, as executors see it: job hand-off, results, events, stopping."""

    def __init__(self, *, name: str, store: BatchStore, source: Any, workflow_digest: str,
                 emit: Callable[[Event], None], force: Iterable[str] = ()) -> None:
        self.name = name
        self.store = store
        self.source = source
        self.workflow_digest = workflow_digest
        self.batch_id = store.run_id
        self.force = list(force)
        self.emit = emit
        self.stop = threading.Event()
        self.results: dict[int, JobResult] = {}
        self.workers: dict[str, WorkerStats] = {}
        self._lock = threading.Lock()

    # -- what executors call

    def payload(self, job: Job) -> dict[str, Any]:
        return {"name": job.name, "index": job.index, "overrides": dict(job.overrides), "force": self.force}

    def worker_ready(self, worker: str, pid: int, node: str = "", gpus: Iterable[str] = ()) -> None:
        """A worker is up (reported again with each result: a new pid means it was restarted)."""
        stats = self.workers.get(worker)
        if stats is not None and stats.pid:
            if pid and stats.pid != pid:
                stats.restarts += 1
                self.emit(WorkerRestarted(run_id=self.batch_id, worker=worker, pid=pid, previous_pid=stats.pid))
                stats.pid = pid
            return
        stats = self.workers.setdefault(worker, WorkerStats(worker))
        stats.pid, stats.node, stats.gpus = pid, node, list(gpus)
        self.emit(WorkerReady(run_id=self.batch_id, worker=worker, pid=pid, node=node, gpus=list(gpus)))

    def worker_lost(self, worker: str, error: str) -> None:
        stats = self.workers.setdefault(worker, WorkerStats(worker))
        if not stats.lost:
            stats.lost = True
            self.emit(WorkerLost(run_id=self.batch_id, worker=worker, error=error))

    def job_started(self, job: Job, worker: str) -> None:
        self.emit(JobStarted(run_id=self.batch_id, job=job.name, index=job.index, worker=worker,
                             overrides=json_values(job.values)))

    def node_event(self, job: Job, worker: str, event: dict[str, Any]) -> None:
        if event.get("ui"):
            event = {**event, "ui": rebase_ui(event["ui"], self.store.job_dir(job), self.store.output_dir)}
        self.emit(JobNodeEvent(run_id=self.batch_id, job=job.name, worker=worker, node_event=event))

    def finish(self, job: Job, worker: str, outcome: dict[str, Any], *, scratch: Path | None = None,
               files: Mapping[str, bytes] | None = None) -> JobResult:
        """Record a job's outcome; publish its files (once) when it succeeded."""
        status = outcome.get("status", "failed")
        result = JobResult(job=job, status=status, worker=worker, error=outcome.get("error", ""),
                           executed=list(outcome.get("executed", [])), cached=list(outcome.get("cached", [])),
                           outputs=outcome.get("outputs", {}), model_loads=int(outcome.get("model_loads", 0)),
                           seconds=float(outcome.get("seconds", 0.0)))
        if status == "success":
            folder = scratch
            if files is not None:
                folder = self.store.scratch(job)
                self.store.write_files(folder, files)
            assert folder is not None, "a successful job brings its files or its scratch folder"
            target = self.store.job_dir(job)
            manifest = make_manifest(job, outcome, target, self.store.output_dir, batch=self.name,
                                     worker=worker, workflow_digest=self.workflow_digest)
            published = self.store.publish(job, folder, manifest)
            if published is None:
                result.status = "done_before"
                result.error = "its outputs were written meanwhile (by another run); kept those"
            result.ui = manifest["ui"]
            result.files = [target / f for f in outcome.get("files", [])]
        elif scratch is not None:
            self.store.discard(scratch)
        with self._lock:
            self.results[job.index] = result
            stats = self.workers.setdefault(worker, WorkerStats(worker))
            stats.jobs += 1
            stats.failed += status in ("failed", "invalid")
            stats.model_loads = max(stats.model_loads, result.model_loads) if worker else 0
            stats.busy_seconds += result.seconds
        self.emit(JobFinished(run_id=self.batch_id, job=job.name, index=job.index, worker=worker,
                              status=result.status, overrides=json_values(job.overrides),
                              files=[str(f) for f in result.files], error=result.error, seconds=result.seconds,
                              model_loads=result.model_loads))
        return result

    def fail(self, job: Job, worker: str, error: str) -> JobResult:
        """A job that did not get a result from its worker (it died too often, or an internal error)."""
        return self.finish(job, worker, {"status": "failed", "error": error})


def _source_of(workflow: Any) -> tuple[Any, str]:
    """What workers get (a path is read here, so every worker runs the same bytes) and its digest."""
    if isinstance(workflow, (str, Path)) and not str(workflow).lstrip().startswith(("{", "[")):
        try:
            data: Any = Path(workflow).read_bytes()
        except OSError:
            data = str(workflow)  # let the engine report the missing file as a workflow error
    elif hasattr(workflow, "model_dump"):
        data = workflow.model_dump(by_alias=True)
    else:
        data = workflow
    if isinstance(data, bytes):
        digest_input = data
    else:
        digest_input = json.dumps(data, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    return data, hashlib.blake2b(digest_input, digest_size=8).hexdigest()


def make_executor(executor: str | BatchExecutor, *, engine: Any = None, engine_settings: Mapping[str, Any],
                  workers: int | None = None, address: str | None = None, **ray_options: Any) -> BatchExecutor:
    """An executor object from its name ("local", "ray")."""
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        from graphgen.batch.local import LocalExecutor

        if workers not in (None, 1):
            raise BatchError("a local batch runs one job at a time on one Engine; --workers needs --ray")
        if engine is None:
            from graphgen.engine import Engine

            engine = Engine(**engine_settings)
        return LocalExecutor(engine)
    if executor == "ray":
        from graphgen.batch.ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers, engine_settings=engine_settings, **ray_options)
    raise BatchError(f"unknown executor {executor!r}: use 'local' or 'ray'")


def run_batch(
    workflow: Any,
    jobs: BatchSpec | Iterable[Mapping[str, Any]] | None = None,
    *,
    executor: str | BatchExecutor = "local",
    engine: Any = None,
    output_dir: str | os.PathLike[str] | None = None,
    input_dir: str | os.PathLike[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    plugins: Iterable[str | os.PathLike[str]] = (),
    overrides: Mapping[str, Any] | None = None,
    name: str | None = None,
    resume: bool = False,
    force: Iterable[str] = (),
    workers: int | None = None,
    address: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    **ray_options: Any,
) -> BatchResult:
    """Run a batch of one workflow: each job's overrides applied to it, outputs saved once per job.

    Args:
        workflow: The workflow (path, JSON text, dict, `Workflow`, PNG bytes).
        jobs: A `BatchSpec` (sweeps, see `graphgen.batch.spec`) or a list of override dicts.
        executor: "local", "ray", or an executor object (kept open: reuse it across batches).
        engine: The Engine of a local batch (its models and cache are reused; its output folder is
            the default `output_dir`). For Ray, its folders are the workers' defaults.
        output_dir: The job folders go to `<output_dir>/<name>/<job>/`.
        input_dir, models_dir, plugins: The workers' Engine settings (made absolute for Ray).
        overrides: Applied to every job (the job's own values win).
        name: The batch folder's name (default: the `BatchSpec`'s, else the workflow file's name).
        resume: Skip jobs whose outputs exist. Without it, existing outputs are an error.
        force: Node ids to re-run in every job (output nodes always run).
        workers: Ray actors to start (default: one per GPU of the cluster).
        address: Ray cluster: "auto", "local", "HOST:PORT" or "ray://HOST:PORT" (default: the
            connected one, else RAY_ADDRESS, else a new local cluster).
        on_event: Called with batch events (`graphgen.batch.events`) and `JobNodeEvent`s.
        stop: Set it (from any thread) to stop handing out jobs; jobs in flight finish.
        **ray_options: `max_restarts`, `max_task_retries`, `gpus_per_worker`, `prefetch`, ... for `RayExecutor`.

    Raises:
        BatchError: the batch cannot start (nothing ran).
        BatchSpecError: a sweep or batch file is malformed.
    """
    started = time.perf_counter()
    emit = on_event or (lambda _event: None)
    spec_name = jobs.name if isinstance(jobs, BatchSpec) else None
    name = check_batch_name(name or spec_name or default_batch_name(workflow))
    job_list = as_jobs(jobs, overrides)
    duplicates = (jobs.count() - len(job_list)) if isinstance(jobs, BatchSpec) else 0
    if engine is not None:
        output_dir = output_dir if output_dir is not None else engine.settings.output_dir
        input_dir = input_dir if input_dir is not None else engine.settings.input_dir
        models_dir = models_dir if models_dir is not None else engine.settings.models_dir
    output_dir = Path(output_dir if output_dir is not None else "output")
    settings: dict[str, Any] = {"output_dir": output_dir, "input_dir": Path(input_dir or "input"),
                                "models_dir": Path(models_dir) if models_dir else None,
                                "plugins": [Path(p) for p in plugins]}
    store = BatchStore(output_dir, name)
    done = [job for job in job_list if store.is_done(job)]
    if done and not resume:
        shown = ", ".join(j.name for j in done[:3]) + (f" and {len(done) - 3} more" if len(done) > 3 else "")
        raise BatchError(f"{store.root} already holds the outputs of {len(done)} of these jobs ({shown}); "
                         "add --resume (resume=True) to skip finished jobs, or choose another output folder")
    source, digest = _source_of(workflow)
    if resume:
        stale = [j.name for j in done if (store.manifest(j) or {}).get("workflow_digest") not in (None, digest)]
        if stale:
            raise BatchError(f"the workflow changed since {len(stale)} finished jobs in {store.root} ran "
                             f"(e.g. {stale[0]}); resuming would mix results: use another output folder or batch name")
    run = BatchRun(name=name, store=store, source=source, workflow_digest=digest, emit=emit, force=force)
    if stop is not None:
        run.stop = stop
    pending = [job for job in job_list if not store.is_done(job)]
    runner = make_executor(executor, engine=engine, engine_settings=settings, workers=workers, address=address,
                           **ray_options)
    owns_executor = isinstance(executor, str)
    emit(BatchStarted(run_id=run.batch_id, name=name, folder=str(store.root), executor=runner.kind,
                      total=len(job_list), to_run=len(pending), done_before=len(done), duplicates=duplicates))
    for job in done:
        manifest = store.manifest(job) or {}
        run.results[job.index] = JobResult(job=job, status="done_before", worker=manifest.get("worker", ""),
                                           files=[store.job_dir(job) / f for f in manifest.get("files", [])],
                                           ui=manifest.get("ui", {}), seconds=manifest.get("seconds", 0.0))
        emit(JobSkipped(run_id=run.batch_id, job=job.name, index=job.index, reason="its outputs exist (resume)"))
    try:
        if pending:
            runner.start(run)
            runner.run(run, pending)
    except KeyboardInterrupt:
        run.stop.set()
        runner.cancel()
        raise
    finally:
        if owns_executor:
            runner.close()
        store.close()
    result = BatchResult(name=name, folder=store.root, workers=run.workers, duplicates=duplicates)
    for job in job_list:
        result.jobs.append(run.results.get(job.index) or JobResult(
            job=job, status="not_run", error="the batch stopped before it ran" if run.stop.is_set() else
            "no worker was left to run it"))
    result.seconds = time.perf_counter() - started
    if run.stop.is_set() and result.not_run:
        result.status = "cancelled"
    elif result.failed or result.not_run:
        result.status = "failed"
    ran = len(result.succeeded)
    emit(BatchFinished(run_id=run.batch_id, status=result.status, succeeded=ran, failed=len(result.failed),
                       done_before=len(result.done_before), not_run=len(result.not_run), seconds=result.seconds,
                       jobs_per_second=ran / result.seconds if result.seconds > 0 else 0.0,
                       failed_jobs=[{"job": r.job.name, "overrides": json_values(r.job.overrides), "error": r.error}
                                    for r in result.failed]))
    return result
