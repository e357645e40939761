"""List mapping: how a node's inputs become calls, and how the calls' returns become its outputs.

Every output value travels between nodes as a list of items. A node that does not take lists
(`NodeSpec.input_is_list` False) is called once per item: with inputs of unequal lengths the
longest wins and shorter ones repeat their last item (ComfyUI's rule); inputs of one item, the
usual case, make one call. A node that takes lists is called once with every input as a list.

A call that would receive an `ExecutionBlocker` is not made: each of its outputs becomes the
blocker instead, so a block travels downstream item by item.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphgen.blocker import ExecutionBlocker
from graphgen.spec import ExecutionOutcome, NodeSpec

Outputs = tuple[list[Any], ...]
"""A node's outputs: one list of items per output."""


def call_inputs(spec: NodeSpec, inputs: dict[str, list[Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(call index, kwargs)` for each call the node makes over `inputs` (name -> list of items)."""
    if spec.input_is_list:
        yield 0, inputs
        return
    if not inputs:
        yield 0, {}
        return
    longest = max(len(items) for items in inputs.values())
    if longest == 0:  # every input is an empty list: ComfyUI calls the node once with nothing
        yield 0, {}
        return
    if longest == 1:
        yield 0, {name: items[0] for name, items in inputs.items()}
        return
    for index in range(longest):
        yield index, {name: items[index if index < len(items) else -1] for name, items in inputs.items() if items}


def blocker_in(spec: NodeSpec, kwargs: dict[str, Any]) -> ExecutionBlocker | None:
    """The blocker among one call's inputs (inside lists for list-taking nodes), if any."""
    for value in kwargs.values():
        if isinstance(value, ExecutionBlocker):
            return value
        if spec.input_is_list and isinstance(value, list):
            for item in value:
                if isinstance(item, ExecutionBlocker):
                    return item
    return None


def merge_outputs(spec: NodeSpec, calls: list[tuple[Any, ...]]) -> Outputs:
    """Gather the calls' returned values into one list per output.

    A list output (`output_is_list`) contributes its items; a blocker in its place is kept as one
    item so that only that item is blocked downstream.
    """
    flags = spec.list_flags
    merged: list[list[Any]] = []
    for index, is_list in enumerate(flags):
        items: list[Any] = []
        for values in calls:
            value = values[index]
            if is_list and not isinstance(value, ExecutionBlocker):
                items.extend(value)
            else:
                items.append(value)
        merged.append(items)
    return tuple(merged)


def merge_ui(uis: list[dict[str, Any]]) -> dict[str, Any] | None:
    """UI data of several calls: lists concatenated key by key (ComfyUI's rule)."""
    uis = [ui for ui in uis if ui]
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            if isinstance(value, list) and isinstance(merged.get(key, []), list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


def single_values(spec: NodeSpec, outputs: Outputs) -> dict[str, Any]:
    """Outputs by name as a caller reads them: the item itself when an output holds exactly one
    and is not a list output, otherwise the list."""
    if not spec.output_is_list:
        return {name: (items[0] if len(items) == 1 else items)
                for name, items in zip(spec.output_names, outputs, strict=True)}
    flags = spec.list_flags
    return {name: (items[0] if len(items) == 1 and not flags[i] else items)
            for i, (name, items) in enumerate(zip(spec.output_names, outputs, strict=True))}


def blocked_values(spec: NodeSpec, blocker: ExecutionBlocker) -> tuple[Any, ...]:
    """One call's returned values when it is blocked."""
    return (blocker,) * len(spec.outputs)


def outcome_of(outputs: Outputs, ui: dict[str, Any] | None) -> ExecutionOutcome:
    """What the cache keeps for a node: its output lists and UI data."""
    return ExecutionOutcome(values=outputs, ui=ui)
