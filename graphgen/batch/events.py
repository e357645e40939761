"""Events of a batch, for `on_event` callbacks, the rich batch view and `--json` (one object a line).

They share `graphgen.events.Event`'s shape (`kind`, `run_id`, `to_dict()`); `run_id` is the batch id.
The node events of each job are forwarded wrapped in `JobNodeEvent` (live for local batches, when
the job's result arrives for Ray).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from graphgen.events import Event


@dataclass
class BatchStarted(Event):
    kind: ClassVar[str] = "batch_started"
    name: str = ""
    folder: str = ""
    executor: str = "local"
    total: int = 0
    """Jobs in the batch."""
    to_run: int = 0
    done_before: int = 0
    """Jobs skipped because their outputs exist (`--resume`)."""
    duplicates: int = 0
    """Identical jobs dropped from the expansion."""


@dataclass
class WorkerReady(Event):
    """A worker (one Engine: the local process, or one Ray actor) is up."""

    kind: ClassVar[str] = "worker_ready"
    worker: str = ""
    pid: int = 0
    node: str = ""
    gpus: list[str] = field(default_factory=list)


@dataclass
class WorkerRestarted(Event):
    """A Ray actor died (killed, out of memory) and Ray restarted it; its jobs are retried."""

    kind: ClassVar[str] = "worker_restarted"
    worker: str = ""
    pid: int = 0
    previous_pid: int = 0


@dataclass
class WorkerLost(Event):
    """A worker died for good (restarts used up); the others go on."""

    kind: ClassVar[str] = "worker_lost"
    worker: str = ""
    error: str = ""


@dataclass
class JobSkipped(Event):
    kind: ClassVar[str] = "job_skipped"
    job: str = ""
    index: int = 0
    reason: str = ""


@dataclass
class JobStarted(Event):
    """A job was handed to a worker (for Ray: queued on its actor)."""

    kind: ClassVar[str] = "job_started"
    job: str = ""
    index: int = 0
    worker: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobNodeEvent(Event):
    """A node event of one job (`node_event` is that event's `to_dict()`)."""

    kind: ClassVar[str] = "job_node_event"
    job: str = ""
    worker: str = ""
    node_event: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobFinished(Event):
    kind: ClassVar[str] = "job_finished"
    job: str = ""
    index: int = 0
    worker: str = ""
    status: str = "success"
    """`success`, `failed` (a node failed or the worker died too often), `invalid` or `cancelled`."""
    overrides: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    """Files written for this job (paths), once, when it succeeded."""
    error: str = ""
    seconds: float = 0.0
    model_loads: int = 0
    """Models the worker's Engine had loaded so far (stays flat while models are reused)."""


@dataclass
class BatchFinished(Event):
    kind: ClassVar[str] = "batch_finished"
    status: str = "success"
    """`success` (every job done), `failed` (some job failed or did not run) or `cancelled`."""
    succeeded: int = 0
    failed: int = 0
    done_before: int = 0
    not_run: int = 0
    seconds: float = 0.0
    jobs_per_second: float = 0.0
    failed_jobs: list[dict[str, Any]] = field(default_factory=list)
    """`{"job", "overrides", "error"}` of each failed job."""
