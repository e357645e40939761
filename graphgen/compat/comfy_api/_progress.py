"""`api.execution.set_progress(...)` of the `comfy_api` facades: the running node's progress."""

from __future__ import annotations

import asyncio
from typing import Any

from graphgen.compat import _runtime


def set_progress(value: float, max_value: float, node_id: str | None = None, preview_image: Any = None,
                 ignore_size_limit: bool = False) -> None:
    """Report progress of the running node (graphgen `node_progress`); honours a pending cancel."""
    ctx = _runtime.context()
    if ctx is not None:
        ctx.progress(value, max_value)


class Execution:
    """`api.execution` of the async facade."""

    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        set_progress(value, max_value, node_id, preview_image, ignore_size_limit)
        await asyncio.sleep(0)


class ExecutionSync:
    """`api.execution` of the synchronous facade."""

    def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                     preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        set_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class ComfyAPI:
    """`ComfyAPI()`: async helpers for nodes (`await api.execution.set_progress(...)`)."""

    VERSION = "latest"

    def __init__(self) -> None:
        self.execution = Execution()


class ComfyAPISync:
    """`ComfyAPISync()`: the same helpers, synchronous."""

    VERSION = "latest"

    def __init__(self) -> None:
        self.execution = ExecutionSync()
