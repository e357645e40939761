"""Checking a workflow against the registry before anything runs, reporting every problem at once.

The result of a successful check is a `PreparedWorkflow`: each node's spec, its constants (coerced,
defaults filled in) and its links resolved to output indexes. The planner and executor work from it.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import networkx as nx

from graphgen.asyncutil import run_sync
from graphgen.blocker import ExecutionBlocker
from graphgen.checks import run_checks
from graphgen.errors import Issue, WorkflowError
from graphgen.registry import NodeRegistry, UnknownNodeType
from graphgen.spec import ConstantError, NodeSpec, coerce_constant, type_words, types_compatible
from graphgen.workflow import MAX_NESTING, Link, Workflow, nesting_depth, parse_input

if TYPE_CHECKING:
    from graphgen.context import EngineSettings


@dataclass
class PreparedNode:
    """A node ready to run: constants checked, links resolved to (source id, output index).

    Nodes a running node added by expansion also record that node (`parent`), the id editors
    show for them (`display_id`) and their inputs as the expansion wrote them (`raw_inputs`).
    """

    node_id: str
    spec: NodeSpec
    constants: dict[str, Any]
    links: dict[str, tuple[str, int]]
    parent: str | None = None
    display_id: str | None = None
    raw_inputs: dict[str, Any] | None = None


@dataclass
class PreparedWorkflow:
    """A validated workflow and its dependency graph (edges point from source to consumer)."""

    workflow: Workflow
    nodes: dict[str, PreparedNode]
    graph: nx.DiGraph
    output_nodes: list[str] = field(default_factory=list)
    orders: dict[tuple[str, ...] | None, list[str]] = field(default_factory=dict)
    """Execution orders already computed, by target set (see `plan.execution_order`)."""
    ranks: dict[tuple[str, ...] | None, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    """Node ranks in those orders, by target set (see `plan.execution_ranks`)."""
    issues: list[Issue] = field(default_factory=list)
    """Problems of the output nodes left out of a partially valid workflow (`validate(partial=True)`)."""
    invalid_outputs: list[str] = field(default_factory=list)
    """The output nodes left out because something they need is invalid."""
    _json: dict[str, Any] | None = None
    _specs: tuple[NodeSpec, ...] | None = None

    def specs(self) -> tuple[NodeSpec, ...]:
        """The distinct node specs of the workflow (computed once: each run asks)."""
        if self._specs is None:
            self._specs = tuple({id(n.spec): n.spec for n in self.nodes.values()}.values())
        return self._specs

    def any_lazy(self) -> bool:
        """Whether some node of the workflow has lazy inputs."""
        return any(spec.lazy_inputs for spec in self.specs())

    def workflow_json(self) -> dict[str, Any]:
        """The workflow as JSON-able data (computed once; output nodes embed it in files)."""
        if self._json is None:
            self._json = self.workflow.to_json_dict()
        return self._json

    @property
    def has_dynamic_choices(self) -> bool:
        """Whether some constant was checked against choices computed at validation time."""
        return any(callable(node.spec.inputs[name].choices) for node in self.nodes.values() for name in node.constants)


def validate(workflow: Workflow, registry: NodeRegistry, settings: EngineSettings | None = None,
             partial: bool = False) -> PreparedWorkflow:
    """Check `workflow`; return it prepared, or raise `WorkflowError` listing every issue.

    `settings` (the engine's folders) are what the nodes' declared checks look in (`graphgen.checks`).
    With `partial` (ComfyUI's server behaviour) an output node whose own checks or whose
    upstream nodes' checks fail is left out, with its issues in `PreparedWorkflow.issues`,
    while the valid outputs still run; `WorkflowError` only when no output is valid.
    """
    issues: list[Issue] = []
    specs: dict[str, NodeSpec] = {}
    for node_id, entry in workflow.nodes.items():
        try:
            specs[node_id] = registry.get(entry.class_type)
        except UnknownNodeType:
            issues.append(registry.unknown_type_issue(node_id, entry.class_type))

    prepared: dict[str, PreparedNode] = {}
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for node_id, spec in specs.items():
        entry = workflow.nodes[node_id]
        node = PreparedNode(node_id=node_id, spec=spec, constants={}, links={})
        _check_inputs(node, entry.inputs, workflow, specs, issues, graph)
        issues.extend(run_checks(node_id, spec, node.constants, settings, node.links, specs))
        prepared[node_id] = node

    issues.extend(_cycle_issues(graph, workflow))
    outputs = [node_id for node_id, spec in specs.items() if spec.output_node]
    if not outputs and not any(i.code == "unknown_node_type" for i in issues):
        issues.append(Issue(code="no_output_node", message="the workflow has no output node, so nothing would run",
                            hint="add a node that saves or shows a result (e.g. SaveImage, PreviewImage)"))
    if issues and partial and outputs:
        good, bad = _split_outputs(outputs, issues, graph)
        if good:
            return PreparedWorkflow(workflow=workflow, nodes=prepared, graph=graph, output_nodes=good,
                                    issues=issues, invalid_outputs=bad)
    if issues:
        raise WorkflowError(issues)
    return PreparedWorkflow(workflow=workflow, nodes=prepared, graph=graph, output_nodes=outputs)


def _split_outputs(outputs: list[str], issues: list[Issue], graph: nx.DiGraph) -> tuple[list[str], list[str]]:
    """Output nodes that need no node with an issue, and those that do."""
    if any(i.node_id is None for i in issues):
        return [], list(outputs)
    bad_nodes = {i.node_id for i in issues}
    good: list[str] = []
    bad: list[str] = []
    for output in outputs:
        needed = nx.ancestors(graph, output) | {output}
        (bad if needed & bad_nodes else good).append(output)
    return good, bad


def _check_inputs(node: PreparedNode, raw_inputs: dict[str, Any], workflow: Workflow,
                  specs: dict[str, NodeSpec], issues: list[Issue], graph: nx.DiGraph) -> None:
    spec = node.spec

    def issue(code: str, message: str, input_name: str | None, hint: str = "") -> None:
        issues.append(Issue(code=code, message=message, node_id=node.node_id, node_type=spec.type_name,
                            input=input_name, hint=hint))

    custom = spec.validate_inputs is not None
    takes = spec.validate_takes
    raw_inputs, legacy_types = _resolve_aliases(spec, raw_inputs, issue)
    for name, raw in raw_inputs.items():
        input_spec = spec.inputs.get(name)
        if input_spec is None and spec.accepts_undeclared:
            # ComfyUI passes undeclared links to a function taking **kwargs (and drops constants).
            value = parse_input(raw) if isinstance(raw, list) else None
            if isinstance(value, Link):
                _check_link(node, name, value, workflow, specs, issue, graph, any_type=True)
            continue
        if input_spec is None or (input_spec.hidden and not input_spec.loose_constant):
            known = [n for n, i in spec.inputs.items() if not i.hidden]
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
            hint = (f"did you mean {', '.join(repr(c) for c in close)}? " if close else "") + \
                (f"its inputs are {', '.join(known)}" if known else "it takes no inputs")
            issue("unknown_input", f"{spec.type_name} has no input {name!r}", name, hint)
            continue
        try:
            value = parse_input(raw)
        except ValueError as exc:
            issue("invalid_link", str(exc), name, "fix the link")
            continue
        if isinstance(value, Link):
            _check_link(node, name, value, workflow, specs, issue, graph, any_type=spec.validate_wants_types,
                        legacy_type=legacy_types.get(name))
        elif isinstance(value, (dict, list)) and nesting_depth(value) > MAX_NESTING:
            issue("value_too_deep", f"the value nests more than {MAX_NESTING} levels deep", name,
                  "flatten the value")
        elif custom and (takes is None or name in takes):
            # The node's own validation replaces the built-in checks of this input (ComfyUI):
            # only the plain conversion of an exactly INT/FLOAT/STRING/BOOLEAN input is kept.
            try:
                node.constants[name] = _plain_conversion(input_spec.type, value)
            except (TypeError, ValueError) as exc:
                issue("invalid_input_type", f"cannot read {value!r} as {input_spec.type}: {exc}", name,
                      f"give {type_words(input_spec.type)}")
        else:
            try:
                node.constants[name] = coerce_constant(input_spec, value)
            except ConstantError as exc:
                issue(exc.code, str(exc), name, exc.hint)

    for name, input_spec in spec.inputs.items():
        if name in raw_inputs or input_spec.hidden:
            continue
        if input_spec.has_default and input_spec.accepts_constant:
            node.constants[name] = input_spec.default
        elif not input_spec.optional:
            what = f"a link from a node producing {input_spec.type}" if not input_spec.accepts_constant \
                else type_words(input_spec.type)
            issue("required_input_missing", f"required input {name!r} is missing", name, f"give it {what}")
    if custom and not any(i.node_id == node.node_id for i in issues):
        _custom_validation(node, workflow, specs, issue)


_CONVERSIONS: dict[str, Any] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _plain_conversion(type_name: str, value: Any) -> Any:
    convert = _CONVERSIONS.get(type_name)
    return value if convert is None else convert(value)


def _custom_validation(node: PreparedNode, workflow: Workflow, specs: dict[str, NodeSpec], issue: Any) -> None:
    """Run a node's own input validation (ComfyUI's `VALIDATE_INPUTS`): constants it takes, None
    for linked inputs, and the producing types of links as `input_types` if it asks."""
    spec = node.spec
    takes = spec.validate_takes
    kwargs: dict[str, Any] = {}
    for name in (*node.constants, *node.links):
        if (takes is None or name in takes) and name in spec.inputs:
            kwargs[name] = node.constants.get(name)
    if spec.validate_wants_types:
        kwargs["input_types"] = {name: specs[src].outputs[index].type for name, (src, index) in node.links.items()}
    assert spec.validate_inputs is not None
    try:
        verdict = spec.validate_inputs(kwargs)
        if inspect.isawaitable(verdict):
            verdict = run_sync(verdict)
    except Exception as exc:
        issue("exception_during_validation", f"its input validation raised {type(exc).__name__}: {exc}", None,
              "fix the inputs (or the node's VALIDATE_INPUTS)")
        return
    if verdict is True or isinstance(verdict, ExecutionBlocker):
        return
    detail = "" if verdict is False or verdict is None else f": {verdict}"
    taken = sorted(kwargs.keys() - {"input_types"})
    issue("custom_validation_failed", f"its inputs failed the node's own validation{detail}",
          taken[0] if len(taken) == 1 else None, f"check {', '.join(taken)}" if taken else "check its inputs")


def _resolve_aliases(spec: NodeSpec, raw_inputs: dict[str, Any], issue: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Inputs given by a legacy name (`NodeSpec.aliases`) under their current name, and the types the
    legacy inputs accept where they differ (a link of that type is handed to the node as it is)."""
    if not spec.aliases or not any(name in spec.aliases for name in raw_inputs):
        return raw_inputs, {}
    resolved: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, raw in raw_inputs.items():
        alias = spec.aliases.get(name)
        if alias is None:
            resolved.setdefault(name, raw)
            continue
        if alias.target in raw_inputs:
            issue("duplicate_input", f"both {name!r} (the old name) and {alias.target!r} are given", name,
                  f"keep only {alias.target!r}")
            continue
        resolved[alias.target] = raw
        if alias.type:
            types[alias.target] = f"{spec.inputs[alias.target].type},{alias.type}"
    return resolved, types


def _check_link(node: PreparedNode, name: str, link: Link, workflow: Workflow, specs: dict[str, NodeSpec],
                issue: Any, graph: nx.DiGraph, any_type: bool = False, legacy_type: str | None = None) -> None:
    input_spec = node.spec.inputs.get(name)
    if legacy_type and input_spec is not None:
        input_spec = replace(input_spec, type=legacy_type)
    if link.node not in workflow.nodes:
        close = difflib.get_close_matches(link.node, list(workflow.nodes), n=1)
        issue("link_to_missing_node", f"links to node {link.node!r}, which is not in the workflow", name,
              f"did you mean node {close[0]!r}?" if close else "link to an existing node id")
        return
    graph.add_edge(link.node, node.node_id)
    source = specs.get(link.node)
    if source is None:
        return  # the unknown source type is reported on its own node
    index = source.output_index(link.output)
    if index is None:
        outputs = ", ".join(f"{i}: {o.name} ({o.type})" for i, o in enumerate(source.outputs)) or "none"
        issue("link_to_missing_output",
              f"links to output {link.output!r} of node {link.node} ({source.type_name}), which has no such output",
              name, f"its outputs are {outputs}")
        return
    produced = source.outputs[index].type
    if not any_type and input_spec is not None and not types_compatible(produced, input_spec.type):
        issue("return_type_mismatch",
              f"expects {input_spec.type} but node {link.node} ({source.type_name}) output {index} "
              f"({source.outputs[index].name}) gives {produced}",
              name, f"connect it to an output of type {input_spec.type}")
        return
    node.links[name] = (link.node, index)


def _cycle_issues(graph: nx.DiGraph, workflow: Workflow) -> list[Issue]:
    issues = []
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1:
            (only,) = component
            if not graph.has_edge(only, only):
                continue
        members = sorted(component, key=_natural_key)
        shown = " -> ".join(f"{m} ({workflow.nodes[m].class_type})" for m in members[:8])
        issues.append(Issue(code="cycle", node_id=members[0], node_type=workflow.nodes[members[0]].class_type,
                            message=f"nodes {shown}{' ...' if len(members) > 8 else ''} form a cycle",
                            hint="remove one of the links between these nodes: a workflow must not loop"))
    return issues


def _natural_key(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
