"""Workflows: the pydantic model, the formats it is read from, and loading.

Two JSON forms are read:

- **ComfyUI's API format**, as it is: `{"<id>": {"class_type": ..., "inputs": {...}, "_meta": {...}}}`
  (also wrapped as `{"prompt": {...}}`, the body ComfyUI's `POST /prompt` takes).
- **graphgen's format**, the API format plus what it lacks::

      {"format": "graphgen", "version": 1,
       "metadata": {"title": ..., "description": ...},
       "parameters": {"seed": {"targets": ["14.seed"], "default": 5, "description": ...}},
       "nodes": {"<id>": {"class_type": ..., "inputs": {...}}}}

ComfyUI's editor (UI, litegraph) format is converted with the node schemas when a registry is given
(`graphgen.comfy_ui`), and a PNG path or PNG bytes are read through `graphgen.png_workflow`.

An input is a link when it is a list `[source_id, output]`, where `output` is an output index
or an output name; anything else is a constant. A constant list is written `{"__value__": [...]}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from graphgen.errors import Issue, WorkflowError

if TYPE_CHECKING:
    from graphgen.registry import NodeRegistry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMAT_NAME = "graphgen"
FORMAT_VERSION = 1
MAX_NESTING = 64


@dataclass(frozen=True, slots=True)
class Link:
    """A reference to another node's output, by index or by name."""

    node: str
    output: int | str

    def to_json(self) -> list[Any]:
        return [self.node, self.output]


class NodeEntry(BaseModel):
    """One node of a workflow."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    class_type: str = Field(min_length=1, description="The node type, as listed by `graphgen nodes`.")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description='Input values: a constant, a link ["<node id>", <output index or name>], '
                    'or {"__value__": [...]} for a constant list.',
    )
    meta: dict[str, Any] = Field(default_factory=dict, alias="_meta",
                                 description="Editor data such as a title; ignored by the engine.")

    @property
    def title(self) -> str:
        return str(self.meta.get("title") or self.class_type)


class Parameter(BaseModel):
    """A named workflow parameter: one value the command line can set for one or more inputs."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = Field(min_length=1, description='Inputs it sets, as "<node id>.<input>".')
    default: Any = Field(default=None, description="Value used when the parameter is not set.")
    description: str = ""

    @field_validator("targets")
    @classmethod
    def _targets_have_dot(cls, targets: list[str]) -> list[str]:
        for target in targets:
            if "." not in target:
                raise ValueError(f'target {target!r} must look like "<node id>.<input name>"')
        return targets


class Workflow(BaseModel):
    """A workflow in graphgen's format (ComfyUI API workflows are converted into it on load)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: Literal["graphgen"] = "graphgen"
    version: int = Field(default=FORMAT_VERSION, ge=1, le=FORMAT_VERSION)
    metadata: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    nodes: dict[str, NodeEntry]

    def to_api(self) -> dict[str, Any]:
        """ComfyUI's API form (links by name become indexes only where the caller resolves them)."""
        return {node_id: node.model_dump(by_alias=True, exclude_defaults=False) for node_id, node in self.nodes.items()}

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")

    def save(self, path: str | Path) -> Path:
        """Write the workflow as JSON (atomically, never overwriting another file by accident)."""
        from graphgen.files import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False) + "\n",
                                 overwrite=True)


def parse_input(value: Any) -> Link | Any:
    """Classify a raw input value: a `Link`, or a constant (with `__value__` unwrapped)."""
    kind = type(value)
    if kind is list:
        if len(value) == 2:
            node, output = value
            if type(node) in (str, int) and type(output) in (int, str):
                return Link(node=str(node), output=output)
        raise ValueError('a list is read as a link and must be ["<node id>", <output index or name>]; '
                         'write a constant list as {"__value__": [...]}')
    if kind is dict and len(value) == 1 and "__value__" in value:
        return value["__value__"]
    return value


def json_schema() -> dict[str, Any]:
    """The JSON Schema of graphgen's workflow format."""
    schema = Workflow.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "graphgen workflow"
    schema["description"] = ("A graphgen workflow. ComfyUI API-format workflows ({id: {class_type, inputs}}) "
                             "are accepted as they are and converted to this form on load.")
    return schema


# -- loading ---------------------------------------------------------------------------------

def load_workflow(source: str | Path | bytes | dict[str, Any] | Workflow,
                  registry: NodeRegistry | None = None) -> Workflow:
    """Read a workflow from a path (JSON or a PNG with an embedded workflow), JSON text/bytes,
    PNG bytes, a parsed dict, or a `Workflow`.

    Args:
        source: The workflow.
        registry: Node schemas, needed to convert ComfyUI editor (UI) workflows; without it a UI
            workflow is refused with a clear error (`Engine.prepare` passes its registry).

    Raises:
        WorkflowError: with every problem found (malformed JSON, an unknown layout, bad fields).
    """
    if isinstance(source, Workflow):
        return source
    origin = "workflow"
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(("{", "["))):
        path = Path(source)
        origin = str(path)
        data = _read_json_file(path)
    elif isinstance(source, bytes) and source[:8] == PNG_SIGNATURE:
        from graphgen.png_workflow import workflow_from_png_bytes

        data = workflow_from_png_bytes(source, "image")[1]
    elif isinstance(source, (str, bytes)):
        data = _parse_json(source, origin)
    else:
        data = source
    return workflow_from_data(data, origin, registry)


def _read_json_file(path: Path) -> Any:
    if "\x00" in str(path):
        raise WorkflowError([Issue(code="file_not_found", message=f"{str(path)!r} is not a valid file name "
                                   "(it contains a NUL character)", hint="give the path of a .json workflow")])
    if not path.exists():
        raise WorkflowError([Issue(code="file_not_found", message=f"workflow file {str(path)!r} does not exist",
                                   hint="check the path")])
    if path.is_dir():
        raise WorkflowError([Issue(code="file_not_found", message=f"{str(path)!r} is a folder, not a workflow file",
                                   hint="give the path of a .json workflow")])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WorkflowError([Issue(code="file_unreadable", message=f"cannot read {str(path)!r}: {exc.strerror}",
                                   hint="check the file's permissions")]) from None
    if raw[:8] == PNG_SIGNATURE:
        from graphgen.png_workflow import workflow_from_png_bytes

        return workflow_from_png_bytes(raw, repr(str(path)))[1]
    return _parse_json(raw, str(path))


def _parse_json(raw: str | bytes, origin: str) -> Any:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise WorkflowError([Issue(code="invalid_json", message=f"{origin} is not UTF-8 text "
                                       f"(byte {exc.start} is invalid)", hint="save the workflow as UTF-8 JSON")]) from None
    duplicates: list[str] = []
    try:
        data = json.loads(raw, object_pairs_hook=lambda pairs: _object_without_duplicates(pairs, duplicates))
    except json.JSONDecodeError as exc:
        raise WorkflowError([Issue(code="invalid_json",
                                   message=f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                                   hint="fix the JSON syntax at that position")]) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python reads
        raise WorkflowError([Issue(code="invalid_json", message=f"{origin} holds a value that cannot be read: {exc}",
                                   hint="shorten the value")]) from None
    except RecursionError:
        raise WorkflowError([Issue(code="invalid_json", message=f"{origin} nests too deeply to be read",
                                   hint=f"values may nest at most {MAX_NESTING} levels")]) from None
    if duplicates:
        raise WorkflowError([Issue(code="duplicate_key", message=text,
                                   hint="keep one of them: JSON readers disagree on which one wins")
                             for text in duplicates])
    return data


def _object_without_duplicates(pairs: list[tuple[str, Any]], duplicates: list[str]) -> dict[str, Any]:
    """A JSON object; a key given twice is recorded (silently keeping the last one hides edits)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            duplicates.append(f"key {key!r} appears twice in one object (values {_brief(data[key])} and "
                              f"{_brief(value)})" + (f" inside the object with keys {_brief(list(data)[:5])}"
                                                     if len(data) > 1 else ""))
        data[key] = value
    return data


def _brief(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def detect_format(data: Any) -> str:
    """`graphgen`, `api`, `api-wrapped` (`{"prompt": ...}`), `ui` (litegraph) or `unknown`."""
    if not isinstance(data, dict):
        return "unknown"
    if data.get("format") == FORMAT_NAME or (isinstance(data.get("nodes"), dict) and "class_type" not in data):
        return "graphgen"
    if isinstance(data.get("nodes"), list) and ("links" in data or "last_node_id" in data or "version" in data):
        return "ui"
    if isinstance(data.get("prompt"), dict) and "class_type" not in data.get("prompt", {}):
        return "api-wrapped"
    if data and any(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return "api"
    return "unknown"


def workflow_from_data(data: Any, origin: str = "workflow", registry: NodeRegistry | None = None) -> Workflow:
    """Build a `Workflow` from parsed JSON in any supported format.

    A ComfyUI editor (UI) workflow is converted with the node schemas of `registry`
    (`graphgen.comfy_ui.ui_to_workflow`); without a registry it is refused.
    """
    kind = detect_format(data)
    if kind == "unknown":
        raise WorkflowError([Issue(code="invalid_workflow", message=_unknown_layout_message(data, origin),
                                   hint='a workflow is an object {"<node id>": {"class_type": ..., "inputs": {...}}} '
                                        'or graphgen\'s {"format": "graphgen", "nodes": {...}}')])
    if kind == "ui":
        if registry is not None:
            from graphgen.comfy_ui import ui_to_workflow

            return ui_to_workflow(data, registry)
        raise WorkflowError([Issue(code="unsupported_format",
                                   message=f"{origin} is a ComfyUI editor (UI) workflow, which needs the node "
                                           "schemas to be read",
                                   hint="run it with `graphgen run` or `Engine.run` (they convert it), or convert "
                                        "it once with `graphgen convert IN.json OUT.json`")])
    if kind == "api-wrapped":
        data = data["prompt"]
        kind = "api"
    payload = {"nodes": data} if kind == "api" else data
    try:
        return Workflow.model_validate(payload)
    except ValidationError as exc:
        raise WorkflowError([_issue_from_pydantic(err, kind) for err in exc.errors()]) from None


def _unknown_layout_message(data: Any, origin: str) -> str:
    if not isinstance(data, dict):
        return f"{origin} must hold a JSON object, not {type(data).__name__ if data is not None else 'null'}"
    if not data:
        return f"{origin} holds an empty object: there are no nodes"
    bad = [k for k, v in data.items() if not (isinstance(v, dict) and "class_type" in v)][:3]
    return f"{origin} is not a workflow: entries {', '.join(repr(b) for b in bad)} are not nodes with a class_type"


def nesting_depth(value: Any, limit: int = MAX_NESTING) -> int:
    """How deeply lists and dicts nest in `value` (stops counting past `limit`)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


def _issue_from_pydantic(err: Any, kind: str) -> Issue:
    loc = [str(part) for part in err.get("loc", ())]
    node_id = None
    input_name = None
    if loc and loc[0] == "nodes" and len(loc) > 1:
        node_id = loc[1]
        if len(loc) > 3 and loc[2] == "inputs":
            input_name = loc[3]
    where = ".".join(loc[2:] if kind == "api" and node_id else loc) or "workflow"
    message = f"{where}: {err.get('msg', 'invalid value')}"
    if node_id is not None and kind == "api" and len(loc) == 2:
        message = f"node {node_id} must be an object with class_type and inputs: {err.get('msg')}"
    return Issue(code="invalid_workflow", message=message, node_id=node_id, input=input_name,
                 hint="see `graphgen schema` for the workflow format")
