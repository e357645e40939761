"""What a running node can reach: progress, cancellation, warnings, folders and shared resources.

`current_context()` returns the context of the node running in the calling thread or asyncio task
(a contextvar set around every node call), so helpers that get no context passed in (ComfyUI's
`ProgressBar`, interrupt checks, `PromptServer.send_sync`) still reach the right node.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphgen.events import Event, NodeInfo, NodeMessage, NodePreview, NodeProgress, NodeWarning

if TYPE_CHECKING:
    from graphgen.resources import ResourceCache


class Cancelled(BaseException):
    """Raised inside a node when the run was cancelled.

    It derives from BaseException (like KeyboardInterrupt) so that a node's broad
    `except Exception` cannot swallow a cancel request.
    """


@dataclass
class EngineSettings:
    """Folders and limits that nodes may read.

    Attributes:
        output_dir: Where output nodes write; nothing may be written outside it.
        input_dir: Where image loaders look for relative file names.
        models_dir: Root of a models folder (ComfyUI layout) for name-based loaders.
        temp_dir: Scratch space (previews); defaults to `<output_dir>/.temp`.
        confine_paths: Built-in nodes read files only inside the input, models and output folders,
            and a refusal does not say whether the file exists (`graphgen.paths`). The server sets
            it; command-line runs and embedding apps read any path, as before.
    """

    output_dir: Path = field(default_factory=lambda: Path("output"))
    input_dir: Path = field(default_factory=lambda: Path("input"))
    models_dir: Path | None = None
    temp_dir: Path | None = None
    confine_paths: bool = False

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.input_dir = Path(self.input_dir)
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir)
        self.temp_dir = Path(self.temp_dir) if self.temp_dir is not None else self.output_dir / ".temp"


class NodeContext:
    """Handed to a node while it runs (`self.ctx` in `Node.run`).

    Args:
        node_id: The node's id in the workflow (for nodes a running node created by expansion:
            their own, prefixed id).
        node_type: Its type name.
        run_id: The run it belongs to.
        settings: The run's folders.
        resources: The engine's shared-resource cache (loaded models).
        emit: Where events go.
        cancel_event: Set when the run is cancelled.
        workflow: The workflow being run, as a JSON-able dict (output nodes embed it in files).
        display_id: The id editors show for this node: the node that created an expanded node,
            unless the expansion said otherwise (ComfyUI's `override_display_id`).
        prompt: The API-format prompt as submitted (ComfyUI's hidden `PROMPT`).
        extra_pnginfo: What ComfyUI's hidden `EXTRA_PNGINFO` holds (`{"workflow": ...}`).
        dynprompt: The run's live graph, expansions included (ComfyUI's hidden `DYNPROMPT`).
        call_index: Which item of a list-mapped input this call handles (0 when not mapped).
    """

    def __init__(
        self,
        node_id: str,
        node_type: str,
        run_id: str,
        settings: EngineSettings,
        resources: ResourceCache,
        emit: Callable[[Event], None],
        cancel_event: threading.Event,
        workflow: dict[str, Any] | None = None,
        *,
        display_id: str | None = None,
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
        dynprompt: Any = None,
        call_index: int = 0,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.run_id = run_id
        self.settings = settings
        self.resources = resources
        self.workflow = workflow or {}
        self.display_id = display_id or node_id
        self.prompt = prompt if prompt is not None else self.workflow.get("nodes", self.workflow)
        self.extra_pnginfo = extra_pnginfo if extra_pnginfo is not None else {"workflow": self.workflow}
        self.dynprompt = dynprompt
        self.call_index = call_index
        self._emit = emit
        self._cancel_event = cancel_event
        self._graphs_made = 0
        self.warnings: list[str] = []

    @property
    def unique_id(self) -> str:
        """ComfyUI's name for the node id (its hidden `UNIQUE_ID`)."""
        return self.node_id

    def graph_prefix(self) -> str:
        """A fresh id prefix for a graph this call builds to expand into.

        `"<node id>.<call index>.<n>."`, n counting the graphs this call made: the ids ComfyUI's
        `GraphBuilder` gives, unique within the run and the same on every run (so expanded
        nodes are cached like any other).
        """
        prefix = f"{self.node_id}.{self.call_index}.{self._graphs_made}."
        self._graphs_made += 1
        return prefix

    def send(self, event: str, data: Any) -> None:
        """Send an arbitrary message to whoever watches the run (the server's websocket clients)."""
        self._emit(NodeMessage(run_id=self.run_id, node_id=self.node_id, message=event, data=data))

    @property
    def output_dir(self) -> Path:
        return self.settings.output_dir

    @property
    def input_dir(self) -> Path:
        return self.settings.input_dir

    def check_cancelled(self) -> None:
        """Raise `Cancelled` if the run was cancelled. Call it between steps of long work."""
        if self._cancel_event.is_set():
            raise Cancelled()

    @property
    def cancelled(self) -> bool:
        return self._cancel_event.is_set()

    def progress(self, value: int, total: int | None = None, message: str = "") -> None:
        """Report step progress (shown as a bar) and honour a pending cancel."""
        self._emit(NodeProgress(run_id=self.run_id, node_id=self.node_id, value=value, total=total,
                                message=message))
        self.check_cancelled()

    def preview(self, path: str | os.PathLike[str], message: str = "") -> None:
        """Show an image file under the output folder now (live view: its path; server: a preview)."""
        file = Path(path)
        try:
            rel = file.resolve().relative_to(self.output_dir.resolve())
            item = {"path": str(file), "filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"}
        except ValueError:
            item = {"path": str(file)}
        self._emit(NodePreview(run_id=self.run_id, node_id=self.node_id, node_type=self.node_type,
                               message=message, ui={"images": [item]}))

    def info(self, message: str) -> None:
        """Report something worth seeing that is not a problem (a summary, a report line)."""
        self._emit(NodeInfo(run_id=self.run_id, node_id=self.node_id, node_type=self.node_type, message=message))

    def warn(self, message: str) -> None:
        """Report something the user should know that does not stop the node."""
        self.warnings.append(message)
        self._emit(NodeWarning(run_id=self.run_id, node_id=self.node_id, node_type=self.node_type,
                               message=message))


_CURRENT: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar("graphgen_node_context", default=None)


def current_context() -> NodeContext | None:
    """The context of the node running in this thread or asyncio task, None outside a node."""
    return _CURRENT.get()


def set_current_context(ctx: NodeContext | None) -> contextvars.Token[NodeContext | None]:
    """Make `ctx` current (the executor does this around every node call); returns the reset token."""
    return _CURRENT.set(ctx)


def reset_current_context(token: contextvars.Token[NodeContext | None]) -> None:
    _CURRENT.reset(token)


# The executor's per-node calls, bound once (a node call sets and resets the context).
set_current_context_fast = _CURRENT.set
reset_current_context_fast = _CURRENT.reset
