"""Turning one run's graphgen events into ComfyUI's websocket messages, and results into history.

ComfyUI's editor and API clients follow a run through `execution_start`, `execution_cached`,
`executing`, `progress`, `executed`, then `execution_success` (or `execution_error` /
`execution_interrupted`) and finally `executing` with `node: null`. `RunMessages` produces that
sequence from `graphgen.events` in the worker thread; `send` delivers each message to the client
that queued the prompt. A node's information lines (`ctx.info`, a pack's `send_progress_text`) go
out as ComfyUI's binary progress-text frames, which the editor shows on the node.
"""

from __future__ import annotations

import math
import struct
import time
import traceback as tb
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graphgen.events import (
    Event,
    NodeCached,
    NodeFailed,
    NodeFinished,
    NodeInfo,
    NodeMessage,
    NodePreview,
    NodeProgress,
    NodeStarted,
    RunStarted,
)

if TYPE_CHECKING:
    from graphgen.executor import RunResult
    from graphgen.server.jobs import Job

#: Delivers a JSON message, or a ready binary frame, to the client that queued the prompt.
Send = Callable[[dict[str, Any] | bytes], None]
#: ComfyUI's binary websocket event types (the first 4 bytes of a binary frame, big-endian).
PROGRESS_TEXT = 3


def progress_text_frame(node_id: str, text: str) -> bytes:
    """ComfyUI's progress-text frame: event 3, then the node id's length, the node id and the text
    (UTF-8; the form without a prompt id, as this server does not announce
    `supports_progress_text_metadata`)."""
    node = node_id.encode("utf-8")
    return struct.pack(">II", PROGRESS_TEXT, len(node)) + node + text.encode("utf-8")
# Kept in a history entry's status.messages, as ComfyUI does.
HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})


def now_ms() -> int:
    return int(time.time() * 1000)


def json_safe(value: Any, depth: int = 0) -> Any:
    """A JSON-able copy of UI data (unknown objects become text; NaN becomes null)."""
    if depth > 256:
        return None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)


def client_ui(ui: dict[str, Any] | None) -> dict[str, Any]:
    """A node's UI data as clients get it: files as `{filename, subfolder, type}` (no server paths)."""
    out: dict[str, Any] = {}
    for key, value in (ui or {}).items():
        if isinstance(value, list):
            items = []
            for item in value:
                if isinstance(item, dict) and "filename" in item:
                    item = {k: v for k, v in item.items() if k != "path"}
                    if item.get("subfolder") in (".", None):
                        item["subfolder"] = ""
                items.append(item)
            value = items
        out[str(key)] = json_safe(value)
    return out


class RunMessages:
    """The `on_event` callback of one job's run: sends ComfyUI messages and records the outcome."""

    def __init__(self, job: Job, send: Send, *, on_run_started: Callable[[], None] | None = None,
                 on_done: Callable[[], None] | None = None, debug: bool = False) -> None:
        self.job = job
        self._send = send
        self._on_run_started = on_run_started
        self._on_done = on_done
        self.debug = debug
        self.error_sent = False

    def message(self, kind: str, data: dict[str, Any]) -> None:
        if kind in HISTORY_EVENTS:
            self.job.messages.append([kind, data])
        self._send({"type": kind, "data": data})

    def __call__(self, event: Event) -> None:
        pid = self.job.prompt_id
        if isinstance(event, RunStarted):
            if self._on_run_started is not None:
                self._on_run_started()
            self.message("execution_start", {"prompt_id": pid, "timestamp": now_ms()})
        elif isinstance(event, NodeCached):
            self.message("execution_cached", {"nodes": [event.node_id], "prompt_id": pid, "timestamp": now_ms()})
        elif isinstance(event, NodeStarted):
            self.job.current_node = event.node_id
            self.message("executing", {"node": event.node_id, "display_node": event.display_node_id or event.node_id,
                                        "prompt_id": pid})
        elif isinstance(event, NodeProgress):
            total = event.total if event.total else max(event.value, 1)
            self.message("progress", {"value": event.value, "max": total, "prompt_id": pid, "node": event.node_id})
        elif isinstance(event, NodePreview) and event.ui:
            # shown on the node while it still runs (ComfyUI's editor shows "executed" images)
            self.message("executed", {"node": event.node_id, "display_node": event.node_id,
                                      "output": client_ui(event.ui), "prompt_id": pid})
        elif isinstance(event, NodeFinished):
            self.job.executed.append(event.node_id)
            if event.ui:
                output = client_ui(event.ui)
                self.job.outputs[event.node_id] = output
                self.message("executed", {"node": event.node_id, "display_node": event.display_node_id or event.node_id,
                                          "output": output, "prompt_id": pid})
        elif isinstance(event, NodeInfo):
            self._send(progress_text_frame(event.node_id, event.message))
        elif isinstance(event, NodeMessage):
            self._send({"type": event.message, "data": event.data})
        elif isinstance(event, NodeFailed) and not self.error_sent:
            self.error_sent = True
            # Errors are reported on the node the user sees (an expanded node's: the one that expanded).
            self.message("execution_error", self._error_data(event.display_node_id or event.node_id, event.node_type,
                                                             event.error, event.error_type, ""))

    def _error_data(self, node_id: str | None, node_type: str, message: str, error_type: str,
                    traceback: str) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt_id": self.job.prompt_id, "node_id": node_id, "node_type": node_type,
                "executed": list(self.job.executed), "exception_message": message,
                "exception_type": error_type, "traceback": traceback.splitlines() if self.debug else [],
                "current_inputs": {}, "current_outputs": {}, "timestamp": now_ms()}
        self.job.error = data
        return data

    def finish(self, result: RunResult) -> None:
        """After the run: cached outputs, then success / error / interrupted, then `executing: null`."""
        pid = self.job.prompt_id
        for node_id in result.cached:
            if node_id in result.ui and node_id not in self.job.outputs:
                output = client_ui(result.ui[node_id])
                self.job.outputs[node_id] = output
                self.message("executed", {"node": node_id, "display_node": node_id, "output": output,
                                          "prompt_id": pid})
        self.job.status = {"success": "completed", "cancelled": "cancelled"}.get(result.status, "failed")
        if self.job.status == "failed" and result.failed and self.job.error is not None and self.debug:
            first = next(iter(result.failed.values()))  # the error sent first, now with its traceback
            if first.node_id == self.job.error.get("node_id"):
                self.job.error["traceback"] = first.traceback.splitlines()
        self.done()  # in the history before the client hears that the run ended
        if self.job.status == "completed":
            self.message("execution_success", {"prompt_id": pid, "timestamp": now_ms()})
        elif self.job.status == "cancelled":
            current = self.job.current_node
            self.message("execution_interrupted", {
                "prompt_id": pid, "node_id": current, "node_type": result.node_types.get(current or "", ""),
                "executed": list(result.executed), "timestamp": now_ms()})
        self.end()

    def done(self) -> None:
        if self._on_done is not None:
            self._on_done()

    def crashed(self, exc: BaseException) -> None:
        """The engine itself raised (not a node): report it as an execution error."""
        self.job.status = "failed"
        if not self.error_sent:
            self.error_sent = True
            text = "".join(tb.format_exception(exc)) if self.debug else ""
            data = self._error_data(self.job.current_node, "", str(exc) or type(exc).__name__, type(exc).__name__, text)
            self.done()
            self.message("execution_error", data)
        else:
            self.done()
        self.end()

    def end(self) -> None:
        self._send({"type": "executing", "data": {"node": None, "display_node": None, "prompt_id": self.job.prompt_id}})
