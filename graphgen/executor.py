"""`Executor`: runs prepared workflows against the engine's shared output cache.

Each run gets a fresh event loop and an `ExecutionList` (`graphgen.execution_list`), which holds
the execution model: lazy inputs, expansion, list mapping, blockers and async nodes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from graphgen.cache import OutputCache
from graphgen.context import EngineSettings
from graphgen.events import Event
from graphgen.execution_list import ExecutionList
from graphgen.resources import ResourceCache
from graphgen.run_result import RunResult
from graphgen.validation import PreparedWorkflow


class Executor:
    """Runs prepared workflows against a shared output cache.

    Args:
        cache: The output cache shared by runs.
        settings: Default folders (a run may use its own: `run(settings=...)`).
        resources: Shared loaded models.
        registry: Node types, for the graphs nodes expand into.
    """

    def __init__(self, cache: OutputCache, settings: EngineSettings, resources: ResourceCache,
                 registry: Any = None) -> None:
        self.cache = cache
        self.settings = settings
        self.resources = resources
        self.registry = registry

    def run(
        self,
        prepared: PreparedWorkflow,
        *,
        emit: Callable[[Event], None],
        cancel_event: threading.Event,
        force: Iterable[str] = (),
        targets: Iterable[str] | None = None,
        use_cache: bool = True,
        settings: EngineSettings | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> RunResult:
        """Run `prepared` (its `targets`, default all output nodes) on a fresh event loop."""
        run = ExecutionList(self, prepared, emit, cancel_event, force, targets, use_cache,
                            settings or self.settings, extra_pnginfo)
        return _run_on_new_loop(run.run())


def _run_on_new_loop(coro: Any) -> RunResult:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()
    from graphgen.asyncutil import run_sync  # called from inside a loop: run on a helper thread

    return run_sync(coro)


def settings_for_run(settings: EngineSettings, output_dir: Any = None) -> EngineSettings:
    """The settings of one run: the engine's, with this run's output folder if it has its own."""
    if output_dir is None:
        return settings
    return replace(settings, output_dir=Path(output_dir), temp_dir=Path(output_dir) / ".temp")


__all__ = ["Executor", "RunResult", "settings_for_run"]
