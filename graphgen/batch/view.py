"""The rich view of a batch: the whole batch's progress, jobs done per worker, failures as they come."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    TaskID,
)
from rich.table import Table

from graphgen.batch.events import (
    BatchFinished,
    BatchStarted,
    JobFinished,
    JobSkipped,
    JobStarted,
    WorkerLost,
    WorkerReady,
    WorkerRestarted,
)
from graphgen.batch.spec import describe_values
from graphgen.console import EventView


class BatchView(EventView):
    """Use as a context manager and pass the instance as `on_event` of `run_batch`."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._overall: TaskID | None = None
        self._workers: dict[str, TaskID] = {}
        self._done: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._current: dict[str, str] = {}
        self._loads: dict[str, int] = {}
        self._labels: dict[str, str] = {}
        self._values: dict[str, dict[str, Any]] = {}
        self._finished = 0
        self._started = time.perf_counter()

    def _on_batch_started(self, event: BatchStarted) -> None:
        note = f", {event.done_before} done before" if event.done_before else ""
        note += f", {event.duplicates} duplicates dropped" if event.duplicates else ""
        self.console.print(f"[bold]batch {escape(event.name)}[/]: {event.total} jobs on {event.executor}"
                           f"{note} → {escape(event.folder)}")
        self._overall = self.progress.add_task("jobs", total=event.to_run)

    def _on_worker_ready(self, event: WorkerReady) -> None:
        where = ", ".join(filter(None, [event.node, f"GPU {','.join(event.gpus)}" if event.gpus else "", f"pid {event.pid}"]))
        self._labels[event.worker] = f"{event.worker} ({where})"
        if event.worker not in self._workers:
            self._done[event.worker] = 0
            self._failed[event.worker] = 0
            self._workers[event.worker] = self.progress.add_task(self._describe(event.worker), total=None)
        self._refresh(event.worker)

    def _on_worker_restarted(self, event: WorkerRestarted) -> None:
        self.console.print(f"  [yellow]![/] {escape(event.worker)} died and was restarted (pid {event.previous_pid}"
                           f" → {event.pid}); its jobs are retried")

    def _on_worker_lost(self, event: WorkerLost) -> None:
        self.console.print(f"  [red]✗[/] {escape(event.worker)} is gone for good: {escape(event.error)}", soft_wrap=True)

    def _on_job_skipped(self, event: JobSkipped) -> None:
        return None

    def _on_job_started(self, event: JobStarted) -> None:
        self._current[event.worker] = event.job
        self._values[event.job] = event.overrides
        self._refresh(event.worker)

    def _on_job_finished(self, event: JobFinished) -> None:
        self._finished += 1
        worker = event.worker
        if worker:
            self._done[worker] = self._done.get(worker, 0) + 1
            if event.status != "success":
                self._failed[worker] = self._failed.get(worker, 0) + 1
            self._loads[worker] = event.model_loads
            if self._current.get(worker) == event.job:
                self._current.pop(worker)
            self._refresh(worker)
        if self._overall is not None:
            self.progress.update(self._overall, completed=self._finished)
        if event.status not in ("success", "done_before"):
            values = describe_values(self._values.get(event.job) or event.overrides)
            self.console.print(f"  [red]✗[/] job {escape(event.job)} [dim]({escape(values)})[/] {event.status}: "
                               f"{escape(event.error)}", soft_wrap=True)

    def _on_batch_finished(self, event: BatchFinished) -> None:
        if self._overall is not None:
            self.progress.update(self._overall, description="done")

    def _describe(self, worker: str) -> str:
        current = self._current.get(worker)
        failed = self._failed.get(worker, 0)
        text = f"  {escape(self._labels.get(worker, worker))}: {self._done.get(worker, 0)} done"
        text += f", [red]{failed} failed[/]" if failed else ""
        text += f", {self._loads[worker]} models loaded" if self._loads.get(worker) else ""
        return text + (f" [dim]· {escape(current)}[/]" if current else "")

    def _refresh(self, worker: str) -> None:
        task = self._workers.get(worker)
        if task is not None:
            self.progress.update(task, description=self._describe(worker))


def print_batch_summary(console: Console, result: Any) -> None:
    """Per-worker counts, totals and every failed job with its overrides."""
    if result.workers:
        table = Table(show_edge=False, title="workers")
        for column in ("worker", "where", "jobs", "failed", "models loaded", "restarts", "busy s"):
            table.add_column(column, justify="left" if column in ("worker", "where") else "right")
        for stats in result.workers.values():
            where = ", ".join(filter(None, [stats.node, f"GPU {','.join(stats.gpus)}" if stats.gpus else ""]))
            table.add_row(stats.worker, where, str(stats.jobs), str(stats.failed), str(stats.model_loads),
                          str(stats.restarts) + (" (lost)" if stats.lost else ""), f"{stats.busy_seconds:.1f}")
        console.print(table)
    colour = {"success": "green", "failed": "red", "cancelled": "yellow"}.get(result.status, "white")
    ran = len(result.succeeded)
    rate = f", {ran / result.seconds:.2f} jobs/s" if result.seconds > 0 and ran else ""
    console.print(f"[bold {colour}]{result.status}[/]: {ran} done, {len(result.failed)} failed, "
                  f"{len(result.done_before)} done before, {len(result.not_run)} not run in {result.seconds:.1f}s"
                  f"{rate} → {escape(str(result.folder))}")
    for job in result.failed:
        console.print(f"  [red]✗[/] {escape(job.job.name)} [dim]({escape(describe_values(job.job.overrides, 200))})[/]: "
                      f"{escape(job.error)}", soft_wrap=True)
    if result.not_run:
        console.print(f"  [yellow]{len(result.not_run)} jobs did not run[/]: run the same command with --resume "
                      "to finish the batch")
