"""Workflow templates: graphgen workflows (`workflows/*.json`) offered in the editor's template dialog.

The editor opens templates only in its own (litegraph) format, so a graphgen or API-format
workflow is converted: parameter defaults applied, one editor node per node, widget values in the
order the editor lays out widgets (`graphgen.formats`: required then optional inputs,
`control_after_generate` after a seed), links as `[id, origin, slot, target, slot, type]`, nodes
laid out in columns by depth. Editor-format files are served as they are.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graphgen.formats import editor_inputs, is_seed, is_widget
from graphgen.overrides import apply_overrides
from graphgen.registry import NodeRegistry
from graphgen.spec import BOOLEAN, FLOAT, INT, STRING, InputSpec
from graphgen.workflow import Link, Workflow, detect_format, parse_input, workflow_from_data

log = logging.getLogger("graphgen.server")
MODULE = "graphgen"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,120}$")
THUMBNAIL_SUFFIXES = ("webp", "png", "jpg", "jpeg")
COLUMN_WIDTH, ROW_GAP, NODE_WIDTH = 380, 40, 320


def _default_widget_value(spec: InputSpec) -> Any:
    if spec.has_default:
        return spec.default
    try:
        choices = spec.resolve_choices()
    except Exception:
        choices = None
    if choices:
        return choices[0]
    return {INT: 0, FLOAT: 0.0, STRING: "", BOOLEAN: False}.get(spec.type)


def _depths(workflow: Workflow) -> dict[str, int]:
    """Longest distance from a node without inputs, for the column of each node.

    Iterative (a chain of thousands of nodes must not hit Python's recursion limit); a node on a
    cycle counts the cycle's links once.
    """
    sources: dict[str, list[str]] = {}
    for node_id, entry in workflow.nodes.items():
        found = []
        for raw in entry.inputs.values():
            try:
                value = parse_input(raw)
            except ValueError:
                continue
            if isinstance(value, Link) and value.node in workflow.nodes:
                found.append(value.node)
        sources[node_id] = found
    depth: dict[str, int] = {}
    for root in workflow.nodes:
        if root in depth:
            continue
        stack: list[tuple[str, bool]] = [(root, False)]
        visiting: set[str] = set()
        while stack:
            node_id, done = stack.pop()
            if done:
                visiting.discard(node_id)
                depth[node_id] = max((depth.get(s, -1) + 1 for s in sources[node_id] if s not in visiting),
                                     default=0)
                continue
            if node_id in depth or node_id in visiting:
                continue
            visiting.add(node_id)
            stack.append((node_id, True))
            stack.extend((s, False) for s in sources[node_id] if s not in depth and s not in visiting)
    return depth


def workflow_to_ui(workflow: Workflow, registry: NodeRegistry, name: str = "workflow") -> dict[str, Any]:
    """A graphgen workflow as an editor (litegraph v0.4) graph. Unknown node types raise KeyError."""
    workflow = apply_overrides(workflow, None, registry)
    ids = list(workflow.nodes)
    numeric = all(i.isdigit() for i in ids)
    ui_id = {node_id: (int(node_id) if numeric else index + 1) for index, node_id in enumerate(ids)}
    specs = {node_id: registry.get(entry.class_type) for node_id, entry in workflow.nodes.items()}

    links: list[list[Any]] = []
    outputs: dict[str, list[dict[str, Any]]] = {
        node_id: [{"name": o.name or o.type, "type": o.type, "links": [], "slot_index": i}
                  for i, o in enumerate(spec.outputs)] for node_id, spec in specs.items()}
    nodes: list[dict[str, Any]] = []
    depths = _depths(workflow)
    rows: dict[int, float] = {}
    for order, node_id in enumerate(sorted(ids, key=lambda n: (depths.get(n, 0), ids.index(n)))):
        entry = workflow.nodes[node_id]
        spec = specs[node_id]
        slots: list[dict[str, Any]] = []
        widgets: list[Any] = []
        for item in editor_inputs(spec):
            raw = entry.inputs.get(item.name)
            value = parse_input(raw) if raw is not None else None
            link_id = None
            if isinstance(value, Link) and value.node in specs:
                index = specs[value.node].output_index(value.output)
                if index is not None:
                    link_id = len(links) + 1
                    links.append([link_id, ui_id[value.node], index, ui_id[node_id], len(slots),
                                  specs[value.node].outputs[index].type])
                    outputs[value.node][index]["links"].append(link_id)
            if is_widget(item):
                constant = value if raw is not None and not isinstance(value, Link) else _default_widget_value(item)
                widgets.append(constant)
                if is_seed(item):
                    widgets.append("fixed")
                slot: dict[str, Any] = {"name": item.name, "type": "COMBO" if item.choices is not None else item.type,
                                        "widget": {"name": item.name}, "link": link_id}
                slots.append(slot)
            else:
                slots.append({"name": item.name, "type": item.type, "link": link_id})
        column = depths.get(node_id, 0)
        sockets = sum(1 for slot in slots if "widget" not in slot)
        text_areas = sum(1 for i in editor_inputs(spec) if is_widget(i) and i.multiline)
        height = 40 + 22 * max(sockets, len(spec.outputs)) + 24 * len(widgets) + 70 * text_areas + \
            (220 if spec.output_node else 0)  # room for the images an output node shows
        y = rows.get(column, 40.0)
        rows[column] = y + height + ROW_GAP
        node: dict[str, Any] = {
            "id": ui_id[node_id], "type": entry.class_type, "pos": [40 + column * COLUMN_WIDTH, y],
            "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0, "inputs": slots,
            "outputs": outputs[node_id], "properties": {"Node name for S&R": entry.class_type},
            "widgets_values": widgets}
        if entry.meta.get("title"):
            node["title"] = str(entry.meta["title"])
        nodes.append(node)
    nodes.sort(key=lambda n: n["id"])
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"graphgen-template:{name}")),
        "revision": 0,
        "last_node_id": max((n["id"] for n in nodes), default=0),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [20, 20]}, "graphgen": {"template": name,
                                                                    "metadata": workflow.metadata}},
        "version": 0.4,
    }


class TemplateLibrary:
    """The templates found in some folders: `*.json` workflows in graphgen, API or editor format."""

    def __init__(self, folders: Iterable[Path], registry: NodeRegistry) -> None:
        self.folders = [Path(f) for f in folders]
        self.registry = registry

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.folders:
            try:
                paths = sorted(folder.glob("*.json"))
            except OSError:
                continue
            for path in paths:
                if NAME_PATTERN.match(path.stem) and path.stem not in found and path.is_file():
                    found[path.stem] = path
        return found

    def names(self) -> list[str]:
        """Templates that convert (a workflow using node types this server lacks is left out)."""
        return [name for name in self._files() if self.load(name) is not None]

    def load(self, name: str) -> dict[str, Any] | None:
        path = self._files().get(name)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if detect_format(data) == "ui":
                return data
            return workflow_to_ui(workflow_from_data(data, str(path), self.registry), self.registry, name)
        except Exception as exc:  # a broken file is skipped, not fatal
            log.warning("template %s cannot be offered: %s", path, exc)
            return None

    def thumbnail(self, name: str, suffix: str) -> Path | None:
        """A picture beside the template (`<name>.webp/.png/.jpg`), shown in the template dialog."""
        path = self._files().get(name)
        if path is None or suffix.lower() not in THUMBNAIL_SUFFIXES:
            return None
        picture = path.with_suffix("." + suffix.lower())
        return picture if picture.is_file() else None

    def index(self) -> dict[str, list[str]]:
        """`/api/workflow_templates`: `{module: [names]}`."""
        names = self.names()
        return {MODULE: names} if names else {}


def default_template_folders() -> list[Path]:
    """The project's `workflows/` folder, where graphgen is run from a checkout (or an editable install)."""
    here = Path(__file__).resolve().parents[2] / "workflows"
    return [here] if here.is_dir() else []
