"""`ExecutionBlocker`: a value that stops whatever consumes it, silently or with an error.

A node returns it in place of an output value (`return (ExecutionBlocker(None),)`) to say "nothing
downstream of this output should run". Every call that would receive a blocker is skipped and its
own outputs become blockers in turn, so the block travels down the graph; inside lists (list
mapping) only the items that hold a blocker are skipped. With a message the first node it reaches
is reported as failed with that message; without one (None) the block is silent.
ComfyUI's `comfy_execution.graph.ExecutionBlocker` is this class.
"""

from __future__ import annotations


class ExecutionBlocker:
    """Blocks execution of what consumes it.

    Args:
        message: Reported as an error on the node it reaches; None blocks silently.
    """

    __slots__ = ("message",)

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"

    def __graphgen_nbytes__(self) -> int:
        return 0
