"""Adapter for node classes written in ComfyUI's classic style.

A classic class declares `INPUT_TYPES()` (a dict of `required`/`optional`/`hidden` inputs, each
`(TYPE, {options})` or `([choices], {options})`), `RETURN_TYPES`, optional `RETURN_NAMES`,
`FUNCTION`, `CATEGORY`, `OUTPUT_NODE`, `DESCRIPTION` and `IS_CHANGED`. Such classes are accepted
unchanged, as long as they don't import ComfyUI internals.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from graphgen.context import NodeContext
from graphgen.spec import ALWAYS_RERUN, COMBO, ExecutionOutcome, InputSpec, NodeSpec, OutputSpec

# Option names ComfyUI uses, mapped to InputSpec fields.
_OPTION_FIELDS = {"default": "default", "min": "min", "max": "max", "step": "step",
                  "multiline": "multiline", "forceInput": "force_link", "tooltip": "description"}


def is_classic_node(obj: Any) -> bool:
    """Whether `obj` looks like a ComfyUI classic node class."""
    return isinstance(obj, type) and hasattr(obj, "INPUT_TYPES") and hasattr(obj, "RETURN_TYPES")


def _input_spec(name: str, declaration: Any, optional: bool, hidden: bool) -> InputSpec:
    if isinstance(declaration, str):  # hidden inputs are often declared as a bare type string
        declaration = (declaration,)
    if not isinstance(declaration, (tuple, list)) or not declaration:
        raise TypeError(f"input {name!r}: expected (TYPE, options), got {declaration!r}")
    kind = declaration[0]
    options = declaration[1] if len(declaration) > 1 and isinstance(declaration[1], dict) else {}
    fields: dict[str, Any] = {}
    for key, field_name in _OPTION_FIELDS.items():
        if key in options:
            fields[field_name] = options[key]
    if isinstance(kind, (list, tuple)):
        choices = list(kind)
        fields.setdefault("default", choices[0] if choices else None)
        return InputSpec(name=name, type=COMBO, choices=choices, optional=optional, hidden=hidden, **fields)
    if kind == COMBO and "options" in options:
        return InputSpec(name=name, type=COMBO, choices=list(options["options"]), optional=optional,
                         hidden=hidden, **fields)
    return InputSpec(name=name, type=str(kind), optional=optional, hidden=hidden, **fields)


def classic_spec(type_name: str, cls: type, display_name: str = "") -> NodeSpec:
    """Build a `NodeSpec` from a ComfyUI classic node class."""
    declared = cls.INPUT_TYPES()  # type: ignore[attr-defined]
    inputs: dict[str, InputSpec] = {}
    for section, optional, hidden in (("required", False, False), ("optional", True, False),
                                      ("hidden", True, True)):
        for name, declaration in (declared.get(section) or {}).items():
            inputs[name] = _input_spec(name, declaration, optional, hidden)
    return_types = tuple(cls.RETURN_TYPES)  # type: ignore[attr-defined]
    names = tuple(getattr(cls, "RETURN_NAMES", None) or ())
    outputs = []
    for index, kind in enumerate(return_types):
        kind_name = COMBO if isinstance(kind, (list, tuple)) else str(kind)
        outputs.append(OutputSpec(type=kind_name, name=names[index] if index < len(names) else kind_name.lower()))
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ()) or ()):
        raise TypeError("INPUT_IS_LIST / OUTPUT_IS_LIST (list mapping) is not supported yet")

    function_name = getattr(cls, "FUNCTION", None)
    if not function_name or not hasattr(cls, function_name):
        raise TypeError(f"FUNCTION names {function_name!r}, which the class does not define")

    is_changed = getattr(cls, "IS_CHANGED", None)
    fingerprint = None
    deterministic = True
    if is_changed is not None:
        def fingerprint(constants: dict[str, Any], settings: Any = None) -> Hashable | None:
            value = is_changed(**constants)
            if isinstance(value, float) and math.isnan(value):
                # ComfyUI's idiom for "always re-run": NaN never equals itself.
                return ALWAYS_RERUN
            return repr(value)

    hidden_names = [name for name, spec in inputs.items() if spec.hidden]

    def execute(ctx: NodeContext, kwargs: dict[str, Any]) -> ExecutionOutcome:
        for name in hidden_names:
            value = _hidden_value(name, inputs[name].type, ctx)
            if value is not None:
                kwargs[name] = value
        instance = cls()
        returned = getattr(instance, function_name)(**kwargs)
        ui = None
        if isinstance(returned, dict):
            ui = returned.get("ui")
            returned = returned.get("result", ())
        values = tuple(returned) if returned is not None else ()
        if len(values) != len(outputs):
            raise TypeError(f"{function_name}() returned {len(values)} values but RETURN_TYPES has {len(outputs)}")
        return ExecutionOutcome(values=values, ui=ui)

    return NodeSpec(
        type_name=type_name,
        inputs=inputs,
        outputs=outputs,
        execute=execute,
        category=str(getattr(cls, "CATEGORY", "misc")),
        display_name=display_name or type_name,
        description=str(getattr(cls, "DESCRIPTION", "") or (cls.__doc__ or "")).strip(),
        version=str(getattr(cls, "VERSION", "1")),
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        deterministic=deterministic,
        fingerprint=fingerprint,
        style="comfyui-classic",
        source=cls,
    )


def _hidden_value(name: str, kind: str, ctx: NodeContext) -> Any:
    """Values ComfyUI passes to hidden inputs: the API prompt, the UI workflow, the node id."""
    if kind == "PROMPT":
        return ctx.workflow.get("nodes", ctx.workflow)
    if kind == "EXTRA_PNGINFO":
        return {"workflow": ctx.workflow}
    if kind == "UNIQUE_ID":
        return ctx.node_id
    return None
