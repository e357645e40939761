"""Overrides: setting inputs from outside a workflow (`--set NODE.INPUT=VALUE`, `--set PARAM=VALUE`).

A key with a dot addresses one node input (`14.seed`); a key without one names a workflow
parameter, which may set several inputs. Values from the command line are text: they are read
as JSON when that fits the input (`5`, `true`, `[1, 2]`) and kept as text for text inputs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from graphgen.errors import Issue, WorkflowError
from graphgen.registry import NodeRegistry, UnknownNodeType
from graphgen.spec import STRING, InputSpec, split_types
from graphgen.workflow import Workflow


class RawText(str):
    """A value typed on a command line: converted according to the input it is given to."""


def parse_set_arguments(arguments: Iterable[str]) -> dict[str, Any]:
    """Parse `KEY=VALUE` strings. Raises `WorkflowError` for ones without `=`."""
    overrides: dict[str, Any] = {}
    issues = []
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or not key.strip():
            issues.append(Issue(code="bad_override", message=f"--set {argument!r} is not KEY=VALUE",
                                hint='write --set NODE.INPUT=VALUE (e.g. --set 14.seed=5) or --set PARAM=VALUE'))
            continue
        overrides[key.strip()] = RawText(value)
    if issues:
        raise WorkflowError(issues)
    return overrides


def _convert(raw: Any, spec: InputSpec | None) -> Any:
    if not isinstance(raw, RawText):
        return raw
    if spec is not None and STRING in split_types(spec.type):
        return str(raw)
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return str(raw)
    if spec is not None and spec.choices is not None:
        # A choice typed on the command line: "32" means the choice "32" when that is one.
        choices = spec.resolve_choices() or []
        if str(raw) in choices and parsed not in choices:
            return str(raw)
    return parsed


def _parameter_spec(workflow: Workflow, targets: list[str], registry: NodeRegistry) -> InputSpec | None:
    node_id, _, input_name = targets[0].rpartition(".")
    entry = workflow.nodes.get(node_id)
    if entry is None or entry.class_type not in registry:
        return None
    return registry.get(entry.class_type).inputs.get(input_name)


def apply_overrides(workflow: Workflow, overrides: Mapping[str, Any] | None,
                    registry: NodeRegistry) -> Workflow:
    """Return a copy of `workflow` with parameter defaults and `overrides` applied.

    Raises:
        WorkflowError: for keys that name no node, input or parameter.
    """
    overrides = dict(overrides or {})
    if not overrides and not workflow.parameters:
        return workflow
    updated = workflow.model_copy(deep=True)
    issues: list[Issue] = []
    assignments: list[tuple[str, str, Any, str]] = []  # node, input, value, origin

    for name, parameter in workflow.parameters.items():
        value = overrides.pop(name, parameter.default)
        if value is None:
            continue
        # Record the value used, so that the workflow saved with the results re-runs the same.
        updated.parameters[name].default = _convert(value, _parameter_spec(updated, parameter.targets, registry))
        for target in parameter.targets:
            node_id, _, input_name = target.rpartition(".")
            assignments.append((node_id, input_name, value, f"parameter {name!r}"))
    for key, value in overrides.items():
        if "." not in key:
            known = ", ".join(sorted(workflow.parameters)) or "none"
            issues.append(Issue(code="bad_override", message=f"--set {key}: the workflow has no parameter {key!r}",
                                hint=f"its parameters are: {known}; or address an input as NODE.INPUT"))
            continue
        node_id, _, input_name = key.rpartition(".")
        assignments.append((node_id, input_name, value, f"--set {key}"))

    for node_id, input_name, value, origin in assignments:
        entry = updated.nodes.get(node_id)
        if entry is None:
            issues.append(Issue(code="bad_override", message=f"{origin}: there is no node {node_id!r}",
                                hint=f"node ids are: {', '.join(list(updated.nodes)[:20])}"))
            continue
        input_spec = None
        try:
            spec = registry.get(entry.class_type)
        except UnknownNodeType:
            spec = None  # reported by validation
        if spec is not None:
            input_spec = spec.inputs.get(input_name)
            if input_spec is None:
                issues.append(Issue(code="bad_override", node_id=node_id, node_type=entry.class_type,
                                    input=input_name, message=f"{origin}: {entry.class_type} has no input {input_name!r}",
                                    hint=f"its inputs are {', '.join(spec.inputs)}"))
                continue
        converted = _convert(value, input_spec)
        entry.inputs[input_name] = {"__value__": converted} if isinstance(converted, list) else converted
    if issues:
        raise WorkflowError(issues)
    _detach_overridden_targets(updated, {key.rpartition(".")[0::2] for key in overrides if "." in key})
    return updated


def _detach_overridden_targets(workflow: Workflow, explicit: set[tuple[str, str]]) -> None:
    """An input set explicitly (`--set 5.seed=5`) leaves the parameters that target it.

    Otherwise the saved workflow (e.g. in a PNG) would re-apply the parameter's value over the
    explicit one when it is run again.
    """
    for name in list(workflow.parameters):
        parameter = workflow.parameters[name]
        kept = [t for t in parameter.targets if tuple(t.rpartition(".")[0::2]) not in explicit]
        if not kept:
            del workflow.parameters[name]
        elif len(kept) != len(parameter.targets):
            parameter.targets = kept
