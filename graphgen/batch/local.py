"""Local batches: every job on one Engine in this process, one after the other.

The Engine's loaded models and its output cache carry over from job to job, so a seed sweep loads
the model once and re-runs only what the seed changes. Output nodes write straight into the job's
staging folder, which is then published under the job's name.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from graphgen.batch.runner import BatchRun
from graphgen.batch.spec import Job
from graphgen.batch.worker import execute_job, repoint_paths

WORKER = "local"


class LocalExecutor:
    """Runs a batch's jobs on `engine` (kept open after the batch: reuse it)."""

    kind = "local"

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def start(self, run: BatchRun) -> None:
        gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
        run.worker_ready(WORKER, os.getpid(), socket.gethostname(), gpus)

    def run(self, run: BatchRun, jobs: list[Job]) -> None:
        for job in jobs:
            if run.stop.is_set():
                break
            run.job_started(job, WORKER)
            scratch = run.store.scratch(job)

            def forward(event: dict[str, Any], job: Job = job) -> None:
                run.node_event(job, WORKER, event)

            outcome = execute_job(self.engine, run.source, run.payload(job), scratch, on_event=forward,
                                  keep_run_ui=True)
            run_ui = outcome.pop("_run_ui", None)
            result = run.finish(job, WORKER, outcome, scratch=scratch)
            if result.status == "success" and run_ui:
                repoint_paths(run_ui, scratch, run.store.job_dir(job), run.store.output_dir)

    def cancel(self) -> None:
        self.engine.cancel()

    def close(self) -> None:
        return None
