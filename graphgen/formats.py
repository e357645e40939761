"""One rule for ComfyUI's editor widgets, and ComfyUI's API format written from a workflow.

ComfyUI's editor stores a node's constant inputs ("widgets") by position in `widgets_values`. The
positions follow the node definition `/object_info` gives the editor: the visible inputs, required
ones first, then optional ones, each group in declaration order; an input is a widget when its type
is INT, FLOAT, STRING, BOOLEAN or a combo (and it is not forced to be a link); an INT seed
(`seed`, `noise_seed`, `*seed`) is followed by the editor-only `control_after_generate` value.

The reader (`graphgen.comfy_ui`), `/object_info` (`graphgen.server.object_info`) and the template
writer (`graphgen.server.templates`) all use `widget_inputs`, so what is written reads back
unchanged (tests/test_formats.py checks it over random node declarations).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphgen.spec import BOOLEAN, COMBO, FLOAT, INT, STRING, InputSpec, NodeSpec

if TYPE_CHECKING:
    from graphgen.registry import NodeRegistry
    from graphgen.workflow import Workflow

#: Types the editor shows as widgets (combos are recognised by their choices).
WIDGET_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN})
#: Values of the editor-only widget that follows a seed (never sent to an engine).
CONTROL_VALUES = frozenset({"fixed", "randomize", "increment", "decrement"})
SEED_NAMES = frozenset({"seed", "noise_seed"})


def is_widget(spec: InputSpec) -> bool:
    """Whether the editor shows this input as a widget (a value on the node) rather than a socket."""
    if spec.hidden or spec.force_link:
        return False
    if spec.choices is not None or spec.type == COMBO:
        return True
    return spec.type in WIDGET_TYPES


def is_seed_name(name: str) -> bool:
    return name in SEED_NAMES or name.endswith("seed")


def is_seed(spec: InputSpec) -> bool:
    """An INT seed widget: the editor adds its `control_after_generate` value after it."""
    return spec.type == INT and is_seed_name(spec.name) and is_widget(spec)


def editor_inputs(spec: NodeSpec) -> list[InputSpec]:
    """The visible inputs in the editor's order: required, then optional, each in declaration order."""
    visible = [i for i in spec.inputs.values() if not i.hidden]
    return [i for i in visible if not i.optional] + [i for i in visible if i.optional]


def widget_inputs(spec: NodeSpec) -> list[InputSpec]:
    """The inputs `widgets_values` holds, in its order."""
    return [i for i in editor_inputs(spec) if is_widget(i)]


def api_prompt(workflow: Workflow, registry: NodeRegistry) -> dict[str, Any]:
    """`workflow` in ComfyUI's API format, as ComfyUI's API tools expect it.

    Parameter values are written into the inputs they target (as a run applies them), links use
    integer output slots, and every widget input that has a default is filled, so that nothing
    depends on graphgen's defaults.
    """
    from graphgen.overrides import apply_overrides
    from graphgen.workflow import Link, parse_input

    workflow = apply_overrides(workflow, None, registry)
    prompt: dict[str, Any] = {}
    for node_id, node in workflow.nodes.items():
        spec = _spec(registry, node.class_type)
        inputs: dict[str, Any] = {}
        for name, raw in node.inputs.items():
            value = parse_input(raw)
            inputs[name] = [value.node, _slot(registry, workflow, value)] if isinstance(value, Link) else raw
        if spec is not None:
            for item in editor_inputs(spec):
                if item.name not in inputs and item.has_default and is_widget(item):
                    inputs[item.name] = _constant(item.default)
            order = {name: index for index, name in enumerate(spec.inputs)}
            inputs = dict(sorted(inputs.items(), key=lambda kv: order.get(kv[0], len(order))))
        prompt[node_id] = {"class_type": node.class_type, "inputs": inputs, "_meta": {"title": node.title}}
    return prompt


def _constant(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def _spec(registry: NodeRegistry, class_type: str) -> NodeSpec | None:
    if class_type not in registry:
        return None
    try:
        return registry.get(class_type)
    except KeyError:
        return None


def _slot(registry: NodeRegistry, workflow: Workflow, link: Any) -> Any:
    """A link's output as an index (an output name resolved with the source node's spec)."""
    if isinstance(link.output, int):
        return link.output
    source = workflow.nodes.get(link.node)
    spec = _spec(registry, source.class_type) if source is not None else None
    index = spec.output_index(link.output) if spec is not None else None
    return index if index is not None else link.output
