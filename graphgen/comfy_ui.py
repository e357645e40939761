"""ComfyUI editor (UI / litegraph) workflows → graphgen workflows, using the node schemas.

The editor saves a graph, not a program: node widgets are stored by position, links by id, and
some nodes exist only in the editor. Turning it into something an engine runs needs each node's
input schema, which is why ComfyUI itself does it only in the browser. This module does it from
a `NodeRegistry`:

- **formats**: litegraph v0.4 (`links: [[id, origin, origin_slot, target, target_slot, type]]`)
  and v1 (`links: [{id, origin_id, origin_slot, target_id, target_slot, type}]`), with subgraphs
  (`definitions.subgraphs`) expanded.
- **widgets**: `widgets_values` is positional over the node's widget inputs (inputs of a constant
  type: INT, FLOAT, STRING, BOOLEAN, COMBO) in declaration order. Files saved by ComfyUI keep the
  value of a widget that was turned into a linked input; some writers leave it out. Both layouts
  are tried and the one whose values fit the widget types (and count) is used. The
  frontend-only `control_after_generate` value (`fixed`, `randomize`, `increment`, `decrement`)
  after a seed widget (an INT named `seed`/`noise_seed`/`*seed`) is skipped; after another INT
  widget it is skipped only when the next widget could not take that word. A dict
  `widgets_values` is read by name.
- **modes**: muted nodes (mode 2) are dropped; bypassed nodes (mode 4) are wired through: a link
  from a bypassed node's output goes to what feeds its input of the same type (the input at the
  same position first).
- **virtual nodes**: `Note`/`MarkdownNote` are dropped (their texts kept in `metadata.notes`),
  `Reroute` is passed through, a `PrimitiveNode`'s value is written into every input it feeds.
  Groups and editor state are ignored.
- **ids**: node ids stay as they are; nodes from a subgraph instance `12` become `12:<inner id>`
  (as ComfyUI's API prompts write them).

Control modes such as `randomize` are not applied: a converted workflow runs with the seed stored
in the file, so it reproduces the image the file was saved with.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphgen.errors import Issue, WorkflowError
from graphgen.formats import CONTROL_VALUES, is_seed, is_seed_name, widget_inputs
from graphgen.spec import BOOLEAN, COMBO, FLOAT, INT, STRING, InputSpec, NodeSpec, split_types

if TYPE_CHECKING:
    from graphgen.registry import NodeRegistry
    from graphgen.workflow import Workflow

__all__ = ["CONTROL_VALUES", "convert_file", "is_ui_workflow", "ui_to_workflow"]

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE_TYPES = frozenset({"Reroute"})
PRIMITIVE_TYPE = "PrimitiveNode"
MODE_MUTED = 2
MODE_BYPASSED = 4
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20
MAX_SUBGRAPH_DEPTH = 32


def is_ui_workflow(data: Any) -> bool:
    """Whether parsed JSON is a ComfyUI editor (litegraph) workflow."""
    from graphgen.workflow import detect_format

    return detect_format(data) == "ui"


# -- the graph, as read from the file ---------------------------------------------------------

@dataclass
class _Link:
    origin: str | None  # node id; None: the link carries `value` (a promoted subgraph widget)
    slot: int
    target: str
    target_slot: int
    type: str = "*"
    value: Any = None


@dataclass
class _Input:
    name: str
    type: str
    link: str | None
    widget: str | None


@dataclass
class _UINode:
    id: str
    type: str
    mode: int
    inputs: list[_Input]
    outputs: list[str]
    widgets_values: Any
    title: str | None
    properties: dict[str, Any] = field(default_factory=dict)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def _parse_link(raw: Any) -> tuple[Any, Any, int, Any, int, str] | None:
    if isinstance(raw, list) and len(raw) >= 5:
        lid, origin, slot, target, target_slot = raw[:5]
        kind = raw[5] if len(raw) > 5 else "*"
    elif isinstance(raw, dict):
        lid, origin, slot = raw.get("id"), raw.get("origin_id"), raw.get("origin_slot")
        target, target_slot, kind = raw.get("target_id"), raw.get("target_slot"), raw.get("type", "*")
    else:
        return None
    if lid is None or origin is None or target is None or _int(slot) is None or _int(target_slot) is None:
        return None
    return lid, origin, int(slot), target, int(target_slot), str(kind if kind is not None else "*")


def _node_ref(prefix: str, raw_id: Any, special: dict[int, str]) -> str:
    number = _int(raw_id)
    if number is not None and number in special:
        return prefix + special[number]
    return f"{prefix}{raw_id}"


def _parse_graph(graph: dict[str, Any], prefix: str, where: str,
                 issues: list[Issue]) -> tuple[dict[str, _UINode], dict[str, _Link]]:
    special = {SUBGRAPH_INPUT_NODE: "<in>", SUBGRAPH_OUTPUT_NODE: "<out>"}
    links: dict[str, _Link] = {}
    raw_links = graph.get("links") or []
    if not isinstance(raw_links, list):
        issues.append(Issue(code="invalid_workflow", message=f"{where}: 'links' must be a list",
                            hint="the file is not a ComfyUI editor workflow, or it is damaged"))
        raw_links = []
    for raw in raw_links:
        parsed = _parse_link(raw)
        if parsed is None:
            continue  # a malformed link leaves its input unconnected
        lid, origin, slot, target, target_slot, kind = parsed
        links[f"{prefix}#{lid}"] = _Link(origin=_node_ref(prefix, origin, special), slot=slot,
                                         target=_node_ref(prefix, target, special), target_slot=target_slot,
                                         type=kind)

    nodes: dict[str, _UINode] = {}
    for index, raw in enumerate(graph.get("nodes") or []):
        if not isinstance(raw, dict) or raw.get("id") is None:
            issues.append(Issue(code="invalid_workflow", message=f"{where}: node #{index + 1} has no id",
                                hint="the file is not a ComfyUI editor workflow, or it is damaged"))
            continue
        node_id = f"{prefix}{raw['id']}"
        node_type = raw.get("type") or raw.get("class_type")
        if not isinstance(node_type, str) or not node_type:
            issues.append(Issue(code="invalid_workflow", node_id=node_id, message="the node has no type",
                                hint="give the node a type, or delete it"))
            continue
        if not _is_list_or_absent(raw.get("inputs")) or not _is_list_or_absent(raw.get("outputs")):
            issues.append(Issue(code="invalid_workflow", node_id=node_id, node_type=node_type,
                                message="the node's inputs/outputs are not lists",
                                hint="the file is not a ComfyUI editor workflow, or it is damaged"))
            continue
        inputs = []
        for item in raw.get("inputs") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                continue
            widget = item.get("widget")
            link = item.get("link")
            inputs.append(_Input(name=item["name"], type=str(item.get("type") or "*"),
                                 link=f"{prefix}#{link}" if link is not None else None,
                                 widget=widget.get("name") if isinstance(widget, dict) and
                                 isinstance(widget.get("name"), str) else None))
        outputs = [str(o.get("type") or "*") if isinstance(o, dict) else "*" for o in raw.get("outputs") or []]
        mode = _int(raw.get("mode")) or 0
        found = raw.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        title = raw.get("title") if isinstance(raw.get("title"), str) else None
        nodes[node_id] = _UINode(id=node_id, type=node_type, mode=mode, inputs=inputs, outputs=outputs,
                                 widgets_values=raw.get("widgets_values"), title=title, properties=properties)
    return nodes, links


# -- subgraphs --------------------------------------------------------------------------------

def _subgraph_definitions(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    definitions = data.get("definitions")
    found = definitions.get("subgraphs") if isinstance(definitions, dict) else None
    if not isinstance(found, list):
        return {}
    return {str(s["id"]): s for s in found if isinstance(s, dict) and s.get("id") is not None}


def _is_list_or_absent(value: Any) -> bool:
    return value is None or isinstance(value, list)


def _promoted_values(instance: _UINode) -> dict[int, Any]:
    """Widget values an instance node holds for its subgraph inputs, by input slot."""
    values = instance.widgets_values
    slots = [i for i, inp in enumerate(instance.inputs) if inp.widget]
    if isinstance(values, dict):
        return {i: values[instance.inputs[i].widget or ""] for i in slots
                if (instance.inputs[i].widget or "") in values}
    if not isinstance(values, list) or not slots:
        return {}
    out: dict[int, Any] = {}
    position = 0
    for slot in slots:
        if position >= len(values):
            break
        out[slot] = values[position]
        position += 1
        name = instance.inputs[slot].widget or ""
        if is_seed_name(name) and position < len(values) and (
                isinstance(values[position], bool) or values[position] in CONTROL_VALUES):
            position += 1
    return out


def _expand_subgraphs(nodes: dict[str, _UINode], links: dict[str, _Link], definitions: dict[str, dict[str, Any]],
                      issues: list[Issue], chain: tuple[str, ...] = ()) -> None:
    """Replace every (running) subgraph instance by the nodes of its definition, in place."""
    for node_id in list(nodes):
        node = nodes[node_id]
        definition = definitions.get(node.type)
        if definition is None or node.mode in (MODE_MUTED, MODE_BYPASSED):
            continue  # muted/bypassed instances are handled like any muted/bypassed node
        if node.type in chain or len(chain) >= MAX_SUBGRAPH_DEPTH:
            issues.append(Issue(code="invalid_workflow", node_id=node_id, node_type=node.type,
                                message="subgraphs contain themselves (or nest too deeply)",
                                hint="remove the recursive subgraph instance"))
            nodes.pop(node_id)
            continue
        prefix = f"{node_id}:"
        name = definition.get("name") or node.type
        inner_nodes, inner_links = _parse_graph(definition, prefix, f"subgraph {name!r}", issues)
        _expand_subgraphs(inner_nodes, inner_links, definitions, issues, chain + (node.type,))

        # Subgraph inputs: link inner targets to whatever feeds the instance's input.
        declared = [i for i in definition.get("inputs") or [] if isinstance(i, dict)]
        promoted = _promoted_values(node)
        by_name = {inp.name: index for index, inp in enumerate(node.inputs)}
        for key, link in list(inner_links.items()):
            if link.origin != prefix + "<in>":
                continue
            slot = link.slot
            if slot < len(declared) and declared[slot].get("name") in by_name:
                slot = by_name[declared[slot]["name"]]
            outer_key = node.inputs[slot].link if slot < len(node.inputs) else None
            outer = links.get(outer_key) if outer_key else None
            if outer is not None:
                link.origin, link.slot, link.value = outer.origin, outer.slot, outer.value
            elif slot in promoted:
                link.origin, link.value = None, promoted[slot]
            else:
                del inner_links[key]  # unconnected: the inner widget keeps its own value

        # Subgraph outputs: links from the instance now start at the inner source.
        sources = {}
        for key, link in list(inner_links.items()):
            if link.target == prefix + "<out>":
                sources[link.target_slot] = link
                del inner_links[key]
        for key, link in list(links.items()):
            if link.origin == node_id:
                source = sources.get(link.slot)
                if source is None:
                    del links[key]
                else:
                    link.origin, link.slot, link.value = source.origin, source.slot, source.value
        for key in [k for k, link in links.items() if link.target == node_id]:
            del links[key]
        del nodes[node_id]
        nodes.update(inner_nodes)
        links.update(inner_links)


# -- following links through virtual, muted and bypassed nodes ---------------------------------

_NOTHING = object()


def _types_match(a: str, b: str) -> bool:
    if a == b or "*" in (a, b) or not a or not b:
        return True
    return bool(set(split_types(a.upper())) & set(split_types(b.upper())))


def _primitive_value(node: _UINode) -> Any:
    values = node.widgets_values
    if isinstance(values, list) and values:
        return values[0]
    if isinstance(values, dict) and values:
        return values.get("value", next(iter(values.values())))
    return _NOTHING


class _Resolver:
    def __init__(self, nodes: dict[str, _UINode], links: dict[str, _Link]) -> None:
        self.nodes = nodes
        self.links = links

    def source(self, key: str | None) -> tuple[str, Any, Any] | None:
        """("link", node id, slot), ("value", value, None), or None (nothing feeds it)."""
        return self._follow(key)

    def dead_end(self, key: str | None) -> tuple[_UINode, str] | None:
        """Why a link gives nothing: the muted node it comes from, or the bypassed node with no
        input to stand in for the output (directly or through reroutes and bypasses)."""
        seen: set[str] = set()
        while key is not None and key in self.links and key not in seen:
            seen.add(key)
            link = self.links[key]
            node = self.nodes.get(link.origin) if link.origin is not None else None
            if node is None:
                return None
            if node.mode == MODE_MUTED:
                return node, "muted"
            if node.type in REROUTE_TYPES:
                key = node.inputs[0].link if node.inputs else None
            elif node.mode == MODE_BYPASSED:
                through = self._bypass_input(node, link)
                if through is None:
                    return node, "bypassed"
                key = through.link
            else:
                return None
        return None

    def _follow(self, key: str | None) -> tuple[str, Any, Any] | None:
        # A loop, not recursion: editor graphs may chain thousands of reroutes or bypassed nodes.
        seen: set[tuple[str, int]] = set()
        while key is not None and key in self.links:
            link = self.links[key]
            if link.origin is None:
                return ("value", link.value, None)
            node = self.nodes.get(link.origin)
            if node is None or (node.id, link.slot) in seen:
                return None
            seen.add((node.id, link.slot))
            if node.mode == MODE_MUTED or node.type in NOTE_TYPES:
                return None
            if node.type in REROUTE_TYPES:
                key = node.inputs[0].link if node.inputs else None
            elif node.type == PRIMITIVE_TYPE:
                value = _primitive_value(node)
                return None if value is _NOTHING else ("value", value, None)
            elif node.mode == MODE_BYPASSED:
                through = self._bypass_input(node, link)
                key = through.link if through else None
            else:
                return ("link", node.id, link.slot)
        return None

    def _bypass_input(self, node: _UINode, link: _Link) -> _Input | None:
        """The input of a bypassed node that stands in for the output a link starts at."""
        out_type = node.outputs[link.slot] if link.slot < len(node.outputs) else link.type
        order = list(range(len(node.inputs)))
        if link.slot < len(order):
            order.remove(link.slot)
            order.insert(0, link.slot)
        for index in order:
            candidate = node.inputs[index]
            if candidate.link in self.links and _types_match(candidate.type, out_type):
                return candidate
        return None


# -- widgets ----------------------------------------------------------------------------------

def _static_choices(spec: InputSpec) -> list[Any] | None:
    if spec.choices is None or callable(spec.choices):
        return None
    return list(spec.choices)


def _fits(spec: InputSpec, value: Any) -> bool:
    """Whether a widget value has a type the input takes (choices are checked when static)."""
    types = set(split_types(spec.type))
    if value is None:
        return True
    choices = _static_choices(spec)
    if choices is not None:
        return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in choices)
    if isinstance(value, bool):
        return BOOLEAN in types
    if isinstance(value, int):
        return bool(types & {INT, FLOAT, COMBO})
    if isinstance(value, float):
        return FLOAT in types or COMBO in types or (INT in types and value.is_integer())
    if isinstance(value, str):
        return bool(types & {STRING, COMBO})
    return False


def _takes_text(spec: InputSpec | None, text: str) -> bool:
    if spec is None:
        return False
    types = set(split_types(spec.type))
    if STRING in types:
        return True
    if COMBO in types or spec.choices is not None:
        choices = _static_choices(spec)
        return choices is None or text in choices
    return False


def _assign(layout: list[InputSpec], values: list[Any]) -> tuple[dict[str, Any], int, int, int]:
    """Values by widget name, how many do not fit, how many are left over, how many were expected."""
    assigned: dict[str, Any] = {}
    misfits = 0
    position = 0
    expected = 0
    for index, spec in enumerate(layout):
        expected += 2 if is_seed(spec) else 1
        if position >= len(values):
            continue
        value = values[position]
        position += 1
        assigned[spec.name] = value
        misfits += not _fits(spec, value)
        if INT in split_types(spec.type) and position < len(values):
            nxt = values[position]
            if is_seed(spec) and isinstance(nxt, bool):
                position += 1  # early editors stored the seed's control widget as a boolean (randomize)
            elif isinstance(nxt, str) and nxt in CONTROL_VALUES:
                following = layout[index + 1] if index + 1 < len(layout) else None
                if is_seed(spec) or not _takes_text(following, nxt):
                    position += 1
    return assigned, misfits, len(values) - position, expected


def widget_values(spec: NodeSpec, values: Any, linked: set[str]) -> dict[str, Any]:
    """Map a node's `widgets_values` (a list or a dict) to input names.

    Args:
        spec: The node type's schema.
        values: `widgets_values` as saved by the editor.
        linked: Widget inputs that are connected by a link (their values are not used).
    """
    if isinstance(values, dict):
        return {name: value for name, value in values.items() if name in spec.inputs}
    if not isinstance(values, list) or not values:
        return {}
    widgets = widget_inputs(spec)
    layouts = [widgets]
    unlinked = [w for w in widgets if w.name not in linked]
    if len(unlinked) != len(widgets):
        layouts.append(unlinked)
    best: tuple[tuple[int, bool, int, int], dict[str, Any]] | None = None
    for order, layout in enumerate(layouts):
        assigned, misfits, leftover, expected = _assign(layout, values)
        key = (misfits, leftover > 0, abs(expected - len(values)), order)
        if best is None or key < best[0]:
            best = (key, assigned)
    assert best is not None
    return best[1]


def _constant(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


# -- conversion -------------------------------------------------------------------------------

def _unknown_issue(node: _UINode, registry: NodeRegistry) -> Issue:
    issue = registry.unknown_type_issue(node.id, node.type)
    pack = node.properties.get("cnr_id") or node.properties.get("aux_id")
    if isinstance(pack, str) and pack and issue.code == "unknown_node_type" and pack != "comfy-core":
        issue.hint += f" (in ComfyUI it comes from the node pack {pack!r})"
    return issue


def _notes(nodes: dict[str, _UINode]) -> list[str]:
    texts = []
    for node in nodes.values():
        if node.type in NOTE_TYPES:
            values = node.widgets_values
            text = values[0] if isinstance(values, list) and values else node.properties.get("text")
            if isinstance(text, str) and text.strip():
                texts.append(text)
    return texts


def ui_to_workflow(data: dict[str, Any], registry: NodeRegistry, *, keep_ui: bool = True) -> Workflow:
    """Convert a ComfyUI editor workflow (litegraph v0.4 or v1) into a graphgen `Workflow`.

    Args:
        data: The parsed UI JSON.
        registry: Node schemas (widget order, which inputs are widgets).
        keep_ui: Keep the UI JSON in `metadata["comfyui_workflow"]` (so that results can carry it).

    Returns:
        The workflow: one node per running node of the graph, titles in `_meta.title`.

    Raises:
        WorkflowError: listing every unknown node type at once (with the closest known names), and
            any structural problem of the file.
    """
    from pydantic import ValidationError

    from graphgen.workflow import Workflow

    if not is_ui_workflow(data):
        raise WorkflowError([Issue(code="invalid_workflow", message="this is not a ComfyUI editor (UI) workflow",
                                   hint="a UI workflow has a list of nodes and a list of links")])
    issues: list[Issue] = []
    nodes, links = _parse_graph(data, "", "workflow", issues)
    notes = _notes(nodes)
    _expand_subgraphs(nodes, links, _subgraph_definitions(data), issues)
    resolver = _Resolver(nodes, links)

    converted: dict[str, dict[str, Any]] = {}
    for node_id, node in nodes.items():
        if node.mode in (MODE_MUTED, MODE_BYPASSED) or node.type in NOTE_TYPES | REROUTE_TYPES or \
                node.type == PRIMITIVE_TYPE:
            continue
        try:
            spec = registry.get(node.type)
        except KeyError:
            issues.append(_unknown_issue(node, registry))
            continue
        inputs: dict[str, Any] = {}
        linked: set[str] = set()
        for inp in node.inputs:
            if inp.link is None or inp.link not in links:
                continue
            name = inp.widget or inp.name
            linked.add(name)
            source = resolver.source(inp.link)
            if source is None:
                dead = resolver.dead_end(inp.link)
                input_spec = spec.inputs.get(name)
                if dead is not None and input_spec is not None and not input_spec.optional and \
                        not (input_spec.has_default and input_spec.accepts_constant):
                    other, why = dead
                    if why == "muted":
                        message = f"input {name!r} comes from node {other.id} ({other.type}), which is muted"
                        hint = f"unmute node {other.id}, or mute node {node_id} too"
                    else:
                        message = (f"input {name!r} comes from node {other.id} ({other.type}), which is bypassed "
                                   f"and has no connected input of type {inp.type} to pass through")
                        hint = f"un-bypass node {other.id}, or connect its {inp.type} input"
                    issues.append(Issue(code=f"input_from_{why}_node", node_id=node_id, node_type=node.type,
                                        input=name, message=message, hint=hint))
                continue
            if source[0] == "link":
                inputs[name] = [source[1], source[2]]
            else:
                inputs[name] = _constant(source[1])
        for name, value in widget_values(spec, node.widgets_values, linked).items():
            if name not in inputs and value is not None:
                inputs[name] = _constant(value)
        order = {name: index for index, name in enumerate(spec.inputs)}
        inputs = dict(sorted(inputs.items(), key=lambda item: order.get(item[0], len(order))))
        converted[node_id] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    if issues:
        raise WorkflowError(issues)

    metadata: dict[str, Any] = {"source_format": "comfyui-ui"}
    if data.get("version") is not None:
        metadata["source_version"] = data["version"]
    if notes:
        metadata["notes"] = notes
    if keep_ui:
        metadata["comfyui_workflow"] = copy.deepcopy(data)
    try:
        return Workflow.model_validate({"nodes": converted, "metadata": metadata})
    except ValidationError as exc:  # e.g. an input name that is not a string
        raise WorkflowError([Issue(code="invalid_workflow", message=f"the converted workflow is invalid: {err['msg']}",
                                   hint="check the UI workflow file") for err in exc.errors()]) from None


def convert_file(src: str | Path, dst: str | Path, registry: NodeRegistry, *, api: bool = False,
                 keep_ui: bool = False) -> Path:
    """Convert a workflow file (ComfyUI UI or API JSON, a graphgen file, or a PNG carrying a workflow)
    into a graphgen JSON file (or ComfyUI's API form with `api=True`: parameter values written into
    their inputs, links by output index, every widget filled; see `graphgen.formats.api_prompt`).

    The file is written atomically and never overwrites an existing one.

    Returns:
        The path written.

    Raises:
        WorkflowError: the source cannot be read or converted, or `dst` exists.
    """
    from graphgen.files import atomic_write_text
    from graphgen.workflow import load_workflow, workflow_from_data

    src, dst = Path(src), Path(dst)
    workflow = load_workflow(src, registry)
    if workflow.metadata.get("source_format") == "comfyui-ui" and not keep_ui and \
            "comfyui_workflow" in workflow.metadata:
        metadata = {k: v for k, v in workflow.metadata.items() if k != "comfyui_workflow"}
        workflow = workflow.model_copy(update={"metadata": metadata})
    if "title" not in workflow.metadata and not api:
        workflow = workflow.model_copy(update={"metadata": {"title": src.stem, **workflow.metadata}})
    if api:
        from graphgen.formats import api_prompt

        payload: dict[str, Any] = api_prompt(workflow, registry)
        workflow_from_data(payload, str(dst))  # the API form must read back
    else:
        payload = workflow.to_json_dict()
    text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    try:
        return atomic_write_text(dst, text, overwrite=False)
    except FileExistsError:
        raise WorkflowError([Issue(code="output_exists", message=f"{str(dst)!r} already exists; it is not overwritten",
                                   hint="give another output file name, or delete that file first")]) from None
    except OSError as exc:
        raise WorkflowError([Issue(code="file_unwritable", message=f"cannot write {str(dst)!r}: {exc.strerror}",
                                   hint="check the folder exists and is writable")]) from None
