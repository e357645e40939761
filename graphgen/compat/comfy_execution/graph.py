"""`comfy_execution.graph`: the `ExecutionBlocker` packs return to stop what depends on an output."""

try:
    from graphgen.blocker import ExecutionBlocker
except ImportError:  # until the engine's blocker lands (helper C1's branch): same shape
    class ExecutionBlocker:  # type: ignore[no-redef]
        """Blocks what consumes it; `message` None blocks silently."""

        def __init__(self, message: str | None) -> None:
            self.message = message

__all__ = ["ExecutionBlocker"]
