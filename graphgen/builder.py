"""Authoring workflows in Python.

    from graphgen import WorkflowBuilder

    wf = WorkflowBuilder(title="txt2img")
    model = wf.add("KolorsLoadModel", path="models/kolors")
    cond = wf.add("KolorsTextEncode", text_encoder=model["text_encoder"], prompt="a cat")
    ...
    wf.parameter("seed", sampler.input("seed"), default=0)
    wf.save("my_workflow.json")

Links are made by indexing a node handle with an output name or index (`node["latent"]`,
`node[0]`). `build()` returns a `Workflow`; nothing is checked against node schemas until
`Engine.validate`/`Engine.run`, so a builder works without the packs installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphgen.workflow import Link, NodeEntry, Parameter, Workflow


@dataclass(frozen=True)
class InputRef:
    """Names one input of one node, for workflow parameters."""

    node_id: str
    input: str

    def __str__(self) -> str:
        return f"{self.node_id}.{self.input}"


class NodeHandle:
    """A node added to a builder; index it to link to one of its outputs."""

    def __init__(self, builder: WorkflowBuilder, node_id: str) -> None:
        self._builder = builder
        self.id = node_id

    def __getitem__(self, output: int | str) -> Link:
        return Link(node=self.id, output=output)

    def input(self, name: str) -> InputRef:
        return InputRef(self.id, name)

    def set(self, **inputs: Any) -> NodeHandle:
        """Set more inputs after adding the node."""
        self._builder._nodes[self.id].inputs.update({k: _raw(v) for k, v in inputs.items()})
        return self


def _raw(value: Any) -> Any:
    if isinstance(value, Link):
        return value.to_json()
    if isinstance(value, NodeHandle):
        return [value.id, 0]
    if isinstance(value, (list, tuple)):
        return {"__value__": list(value)}
    return value


class WorkflowBuilder:
    """Builds a graphgen workflow step by step."""

    def __init__(self, title: str = "", description: str = "", **metadata: Any) -> None:
        self._nodes: dict[str, NodeEntry] = {}
        self._parameters: dict[str, Parameter] = {}
        self._metadata = dict(metadata)
        if title:
            self._metadata["title"] = title
        if description:
            self._metadata["description"] = description
        self._next_id = 1

    def add(self, class_type: str, *, id: str | int | None = None, title: str = "", **inputs: Any) -> NodeHandle:
        """Add a node. Inputs are constants, links (`other["output"]`) or node handles (output 0)."""
        node_id = str(id) if id is not None else self._fresh_id()
        if node_id in self._nodes:
            raise ValueError(f"node id {node_id!r} is already used")
        meta = {"title": title} if title else {}
        self._nodes[node_id] = NodeEntry(class_type=class_type, inputs={k: _raw(v) for k, v in inputs.items()},
                                         _meta=meta)
        return NodeHandle(self, node_id)

    def parameter(self, name: str, *targets: InputRef | str, default: Any = None, description: str = "") -> None:
        """Declare a named parameter that sets one or more inputs (`--set NAME=VALUE`)."""
        if "." in name:
            raise ValueError(f"parameter name {name!r} must not contain '.'")
        self._parameters[name] = Parameter(targets=[str(t) for t in targets], default=default,
                                           description=description)

    def build(self) -> Workflow:
        return Workflow(metadata=dict(self._metadata), parameters=dict(self._parameters),
                        nodes={k: v.model_copy(deep=True) for k, v in self._nodes.items()})

    def save(self, path: str | Path) -> Path:
        """Write the workflow as JSON."""
        return self.build().save(path)

    def _fresh_id(self) -> str:
        while str(self._next_id) in self._nodes:
            self._next_id += 1
        node_id = str(self._next_id)
        self._next_id += 1
        return node_id
