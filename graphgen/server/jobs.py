"""The prompt queue: prompts run one at a time on one `Engine`, in order, in a worker thread.

`Engine.run` is synchronous, so a single worker thread takes jobs from a priority queue ordered
by number (ComfyUI's `front` puts a prompt before the others with a negative number). Its events
are turned into ComfyUI messages (`graphgen.server.messages`) and handed to `publish`, which must
be thread-safe (the app posts them to the event loop). Finished jobs stay in a bounded history.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphgen.engine import Engine
from graphgen.server.messages import RunMessages, now_ms
from graphgen.validation import PreparedWorkflow

log = logging.getLogger("graphgen.server")
Publish = Callable[[str | None, dict[str, Any] | bytes], None]
"""`publish(client_id, message)`: client_id None sends to every client."""

FINISHED = ("completed", "failed", "cancelled")


@dataclass(eq=False)
class Job:
    """One queued prompt and, once run, what it produced."""

    number: float
    """Run order (lower first); ComfyUI's `front` gives negative numbers, clients may send their own."""
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    client_id: str | None
    prepared: PreparedWorkflow | None
    """The validated workflow; released once the job has run (the history keeps the prompt itself)."""
    outputs_to_execute: list[str]
    targets: list[str] | None = None
    create_time: int = field(default_factory=now_ms)
    status: str = "pending"  # pending | in_progress | completed | failed | cancelled
    start_time: int | None = None
    end_time: int | None = None
    current_node: str | None = None
    executed: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    interrupt_requested: bool = False

    def queue_entry(self) -> list[Any]:
        """`[number, prompt_id, prompt, extra_data, outputs_to_execute]`, as ComfyUI lists a prompt."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, list(self.outputs_to_execute)]

    def history_entry(self) -> dict[str, Any]:
        status = "success" if self.status == "completed" else "error"
        return {"prompt": self.queue_entry(), "outputs": self.outputs,
                "status": {"status_str": status, "completed": self.status == "completed", "messages": self.messages},
                "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                         for n in self.outputs}}

    def preview(self) -> dict[str, Any] | None:
        for node_id, ui in self.outputs.items():
            for media in ("images", "video", "audio"):
                for item in ui.get(media) or []:
                    if isinstance(item, dict) and "filename" in item:
                        return {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                "type": item.get("type", "output"), "nodeId": node_id, "mediaType": media}
        return None

    def job_summary(self) -> dict[str, Any]:
        """An entry of `/api/jobs`."""
        previews = sum(1 for ui in self.outputs.values() for key in ("images", "video", "audio")
                       for _ in ui.get(key) or [])
        return {"id": self.prompt_id, "status": self.status, "create_time": self.create_time,
                "execution_start_time": self.start_time, "execution_end_time": self.end_time,
                "preview_output": self.preview(), "outputs_count": sum(len(ui) for ui in self.outputs.values()),
                "previewable_outputs_count": previews, "execution_error": self.error,
                "workflow_id": _workflow_id(self.extra_data), "priority": -self.number}

    def job_detail(self) -> dict[str, Any]:
        """`/api/jobs/<id>`: the summary plus the prompt and all outputs."""
        return {**self.job_summary(), "workflow": {"prompt": self.prompt, "extra_data": self.extra_data},
                "outputs": self.outputs, "update_time": self.end_time or self.start_time or self.create_time,
                "execution_status": self.history_entry()["status"]}


def _workflow_id(extra_data: dict[str, Any]) -> str | None:
    workflow = (extra_data.get("extra_pnginfo") or {}).get("workflow") if isinstance(extra_data, dict) else None
    value = workflow.get("id") if isinstance(workflow, dict) else None
    return value if isinstance(value, str) else None


class PromptQueue:
    """Runs queued jobs one at a time on `engine`; keeps the last `history_size` finished jobs."""

    def __init__(self, engine: Engine, publish: Publish, *, history_size: int = 10_000, debug: bool = False) -> None:
        self.engine = engine
        self.publish = publish
        self.history_size = history_size
        self.debug = debug
        self._cond = threading.Condition()
        self._pending: list[tuple[float, int, Job]] = []
        self._by_id: dict[str, Job] = {}
        self._reserved: set[str] = set()
        self._running: Job | None = None
        self._history: OrderedDict[str, Job] = OrderedDict()
        self._counter = itertools.count(1)
        self._tiebreak = itertools.count()
        self._stopping = False
        self._free_requested = False
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="graphgen-queue", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the running job (which is asked to cancel); pending jobs are dropped."""
        with self._cond:
            self._stopping = True
            if self._running is not None:
                self._running.interrupt_requested = True
                self.engine.cancel()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- submitting ------------------------------------------------------------------------------
    def next_number(self, front: bool = False) -> int:
        number = next(self._counter)
        return -number if front else number

    def reserve(self, prompt_id: str) -> bool:
        """Claim a prompt id before the prompt is validated; False when it is taken (queued, running,
        in the history, or claimed by a request still being validated). Atomic: of concurrent
        requests with one id, exactly one gets True."""
        with self._cond:
            if prompt_id in self._by_id or prompt_id in self._reserved:
                return False
            self._reserved.add(prompt_id)
            return True

    def release(self, prompt_id: str) -> None:
        """Give back a reserved id whose prompt was not queued (it failed validation)."""
        with self._cond:
            self._reserved.discard(prompt_id)

    def submit(self, job: Job) -> None:
        with self._cond:
            heapq.heappush(self._pending, (job.number, next(self._tiebreak), job))
            self._by_id[job.prompt_id] = job
            self._reserved.discard(job.prompt_id)
            self._cond.notify_all()
        self.broadcast_status()

    def remaining(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._running is not None else 0)

    def broadcast_status(self) -> None:
        self.publish(None, {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": self.remaining()}}}})

    # -- the worker --------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping and not self._free_requested:
                    self._cond.wait()
                if self._stopping:
                    return
                free, self._free_requested = self._free_requested, False
                if free:
                    job = None
                else:
                    _, _, job = heapq.heappop(self._pending)
                    self._running = job
                    job.status = "in_progress"
                    job.start_time = now_ms()
            if job is None:
                self._free()
                continue
            self.broadcast_status()
            try:
                self._run(job)
            except BaseException:  # never let the worker die: log and go on with the next job
                log.exception("prompt %s: unexpected failure", job.prompt_id)
                job.status = "failed"
            finally:
                self._finish(job)
                self.broadcast_status()

    def _finish(self, job: Job) -> None:
        """Move the running job to the history (once)."""
        with self._cond:
            if self._running is job:
                job.prepared = None
                job.end_time = now_ms()
                self._running = None
                self._remember(job)

    def _free(self) -> None:
        try:
            freed = self.engine.free_resources()
            log.info("freed %d loaded models", freed)
        except Exception:
            log.exception("freeing loaded models failed")

    def request_free(self) -> None:
        """Drop loaded models and cached outputs, between jobs (never under a running one)."""
        with self._cond:
            self._free_requested = True
            self._cond.notify_all()

    def _run(self, job: Job) -> None:
        client = job.client_id

        def send(message: dict[str, Any] | bytes) -> None:
            self.publish(client, message)

        def started() -> None:
            if job.interrupt_requested:  # interrupted before the engine got going
                self.engine.cancel()

        messages = RunMessages(job, send, on_run_started=started, on_done=lambda: self._finish(job), debug=self.debug)
        began = time.perf_counter()
        assert job.prepared is not None
        try:
            pnginfo = job.extra_data.get("extra_pnginfo") if isinstance(job.extra_data, dict) else None
            result = self.engine.run(job.prepared, on_event=messages, outputs=job.targets,
                                     extra_pnginfo=pnginfo if isinstance(pnginfo, dict) else None)
        except Exception as exc:
            log.error("prompt %s failed before running: %s", job.prompt_id, exc)
            messages.crashed(exc)
            return
        messages.finish(result)
        log.info("prompt %s %s in %.2f s", job.prompt_id, job.status, time.perf_counter() - began)

    def _remember(self, job: Job) -> None:
        self._history[job.prompt_id] = job
        while len(self._history) > self.history_size:
            old_id, _ = self._history.popitem(last=False)
            self._by_id.pop(old_id, None)

    # -- control -------------------------------------------------------------------------------------
    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running job (only if it is `prompt_id`, when given), at its next node or step."""
        with self._cond:
            job = self._running
            if job is None or (prompt_id and job.prompt_id != prompt_id):
                return False
            job.interrupt_requested = True
            self.engine.cancel()
            return True

    def delete_pending(self, prompt_ids: Iterable[str]) -> int:
        """Drop pending jobs; returns how many were dropped (the running job is not touched)."""
        wanted = set(prompt_ids)
        with self._cond:
            kept = [entry for entry in self._pending if entry[2].prompt_id not in wanted]
            dropped = len(self._pending) - len(kept)
            for entry in self._pending:
                if entry[2].prompt_id in wanted:
                    self._by_id.pop(entry[2].prompt_id, None)
            self._pending = kept
            heapq.heapify(self._pending)
        if dropped:
            self.broadcast_status()
        return dropped

    def clear_pending(self) -> int:
        with self._cond:
            ids = [entry[2].prompt_id for entry in self._pending]
        return self.delete_pending(ids)

    # -- reading -----------------------------------------------------------------------------------------
    def snapshot(self) -> tuple[list[Job], list[Job]]:
        """(running, pending in run order)."""
        with self._cond:
            running = [self._running] if self._running is not None else []
            pending = [entry[2] for entry in sorted(self._pending, key=lambda e: (e[0], e[1]))]
        return running, pending

    def history(self, max_items: int | None = None, offset: int = 0) -> list[Job]:
        """Finished jobs, oldest first (the last `max_items` when given)."""
        with self._cond:
            jobs = list(self._history.values())
        if offset:
            jobs = jobs[: max(len(jobs) - offset, 0)]
        if max_items is not None:
            jobs = jobs[-max_items:] if max_items > 0 else []
        return jobs

    def get(self, prompt_id: str) -> Job | None:
        with self._cond:
            return self._by_id.get(prompt_id)

    def finished(self, prompt_id: str) -> Job | None:
        with self._cond:
            return self._history.get(prompt_id)

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        with self._cond:
            for prompt_id in prompt_ids:
                if self._history.pop(prompt_id, None) is not None:
                    self._by_id.pop(prompt_id, None)

    def clear_history(self) -> None:
        with self._cond:
            for prompt_id in self._history:
                self._by_id.pop(prompt_id, None)
            self._history.clear()

    def all_jobs(self) -> list[Job]:
        """Running, pending, then finished (newest first)."""
        running, pending = self.snapshot()
        with self._cond:
            done = list(reversed(self._history.values()))
        return running + pending + done
