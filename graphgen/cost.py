"""How much sampling work a workflow asks for, to warn before a long run on a CPU.

On a CPU the shipped defaults (1024², 25 steps) take minutes even on tiny test models and hours
with real weights, and nothing said so. Before such a run the command line prints the size of the
work and the overrides that make it small. The work is counted in megapixel-steps (image area ×
denoising or training steps) from the inputs named in ComfyUI's vocabulary: a node with a `steps`
(or `max_epochs` × `steps_per_epoch`) constant, and `width`/`height`/`batch_size` constants on it
or on the nodes that feed it (an `EmptyLatentImage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from graphgen.validation import PreparedWorkflow

LONG_CPU_WORK = 2.0
"""Megapixel-steps above which a CPU run is worth a warning (512² × 8 steps is 2.1)."""
QUICK = {"width": 256, "height": 256, "steps": 4}
"""What the hint suggests for a quick try."""


@dataclass
class Work:
    """The sampling work of a workflow: megapixel-steps and where the sizes come from."""

    megapixel_steps: float = 0.0
    largest: tuple[int, int, int] = (0, 0, 0)
    """(width, height, steps) of the biggest single job."""
    inputs: dict[str, list[str]] = field(default_factory=dict)
    """For `width`, `height` and `steps`: the node inputs (`"4.width"`) that set them."""


def _constant(prepared: PreparedWorkflow, node_id: str, name: str) -> Any:
    value = prepared.nodes[node_id].constants.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def estimate_work(prepared: PreparedWorkflow) -> Work:
    """Add up the megapixel-steps of every node that samples or trains."""
    work = Work()
    for node_id in prepared.nodes:
        steps = _constant(prepared, node_id, "steps")
        steps_name = "steps"
        if steps is None and _constant(prepared, node_id, "steps_per_epoch") is not None:
            steps = _constant(prepared, node_id, "steps_per_epoch") * (_constant(prepared, node_id, "max_epochs") or 1)
            steps_name = "steps_per_epoch"
        if not steps:
            continue
        sized = [node_id, *sorted(nx.ancestors(prepared.graph, node_id))]
        source = next((n for n in sized if _constant(prepared, n, "width") and _constant(prepared, n, "height")), None)
        if source is None:
            continue
        width, height = _constant(prepared, source, "width"), _constant(prepared, source, "height")
        batch = _constant(prepared, source, "batch_size") or 1
        work.megapixel_steps += width * height * batch * steps / 1e6
        if width * height * steps > work.largest[0] * work.largest[1] * work.largest[2]:
            work.largest = (width, height, steps)
        for key, (where, name) in {"width": (source, "width"), "height": (source, "height"),
                                   "steps": (node_id, steps_name)}.items():
            work.inputs.setdefault(key, []).append(f"{where}.{name}")
    return work


def quick_overrides(prepared: PreparedWorkflow, work: Work) -> list[str]:
    """`--set` arguments that make the run small: by parameter name where the workflow has one."""
    by_target = {target: name for name, parameter in prepared.workflow.parameters.items()
                 for target in parameter.targets}
    arguments: list[str] = []
    for key, value in QUICK.items():
        for target in work.inputs.get(key, []):
            quick = 10 if target.endswith(".steps_per_epoch") else value  # training: 10 steps
            argument = f"--set {by_target.get(target, target)}={quick}"
            if argument not in arguments:
                arguments.append(argument)
    return arguments


def cpu_warning(prepared: PreparedWorkflow, accelerated: bool) -> str | None:
    """The warning to print before a long run without an accelerator, or None."""
    if accelerated:
        return None
    work = estimate_work(prepared)
    if work.megapixel_steps <= LONG_CPU_WORK:
        return None
    width, height, steps = work.largest
    quick = QUICK["width"] * QUICK["height"] * QUICK["steps"] / 1e6
    return (f"this runs on the CPU (no GPU found) and asks for {width}×{height} at {steps} steps, "
            f"{work.megapixel_steps:.0f} megapixel-steps in all: that takes minutes even on tiny test models and "
            f"hours with real weights. For a quick try ({work.megapixel_steps / quick:.0f}× less work): "
            + " ".join(quick_overrides(prepared, work)))
