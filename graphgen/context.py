"""What a running node can reach: progress, cancellation, warnings, folders and shared resources."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphgen.events import Event, NodePreview, NodeProgress, NodeWarning

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
    """

    output_dir: Path = field(default_factory=lambda: Path("output"))
    input_dir: Path = field(default_factory=lambda: Path("input"))
    models_dir: Path | None = None
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.input_dir = Path(self.input_dir)
        if self.models_dir is not None:
            self.models_dir = Path(self.models_dir)
        self.temp_dir = Path(self.temp_dir) if self.temp_dir is not None else self.output_dir / ".temp"


class NodeContext:
    """Handed to a node while it runs (`self.ctx` in `Node.run`).

    Args:
        node_id: The node's id in the workflow.
        node_type: Its type name.
        run_id: The run it belongs to.
        settings: The engine's folders.
        resources: The engine's shared-resource cache (loaded models).
        emit: Where events go.
        cancel_event: Set when the run is cancelled.
        workflow: The workflow being run, as a JSON-able dict (output nodes embed it in files).
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
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.run_id = run_id
        self.settings = settings
        self.resources = resources
        self.workflow = workflow or {}
        self._emit = emit
        self._cancel_event = cancel_event
        self.warnings: list[str] = []

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

    def warn(self, message: str) -> None:
        """Report something the user should know that does not stop the node."""
        self.warnings.append(message)
        self._emit(NodeWarning(run_id=self.run_id, node_id=self.node_id, node_type=self.node_type,
                               message=message))
