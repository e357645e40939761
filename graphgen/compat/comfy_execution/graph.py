"""`comfy_execution.graph`: the `ExecutionBlocker` packs return to stop what depends on an output."""

from graphgen.blocker import ExecutionBlocker

__all__ = ["ExecutionBlocker"]
