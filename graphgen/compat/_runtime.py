"""What the compat modules need from the running engine: the node's context and the folders."""

from __future__ import annotations

from typing import Any

from graphgen.context import EngineSettings
from graphgen.context import current_context as _current_context

_default_settings = EngineSettings()
_registry: Any = None


def context() -> Any:
    """The `NodeContext` of the node running in this thread/task, or None outside a run."""
    return _current_context()


def set_default_settings(settings: EngineSettings) -> None:
    """Folders used outside a run (a pack listing files at import): the last Engine's."""
    global _default_settings
    _default_settings = settings


def settings() -> EngineSettings:
    """The running node's folders, else the default ones."""
    ctx = _current_context()
    found = getattr(ctx, "settings", None) if ctx is not None else None
    return found if found is not None else _default_settings


def set_registry(registry: Any) -> None:
    """The registry packs are being loaded into (its built-in nodes are ComfyUI's `nodes`)."""
    global _registry
    _registry = registry


def registry() -> Any:
    """The registry last set by `set_registry`, or None."""
    return _registry
