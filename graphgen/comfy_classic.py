"""Adapter for node classes written in ComfyUI's classic style.

A classic class declares `INPUT_TYPES()` (a dict of `required`/`optional`/`hidden` inputs, each
`(TYPE, {options})` or `([choices], {options})`), `RETURN_TYPES`, optional `RETURN_NAMES`,
`FUNCTION`, `CATEGORY`, `OUTPUT_NODE`, `DESCRIPTION` and `IS_CHANGED`, and ComfyUI's execution
model: `{"lazy": True}` inputs with `check_lazy_status`, `{"rawLink": True}` inputs,
`INPUT_IS_LIST`/`OUTPUT_IS_LIST`, `VALIDATE_INPUTS`, `async def` functions, returns of
`{"ui": ..., "result": ..., "expand": graph}` and `ExecutionBlocker`s. Each is mapped onto the
matching `NodeSpec` field (see `graphgen.spec.NodeSpec`); the engine does the rest.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Hashable
from types import GeneratorType
from typing import Any

from graphgen.blocker import ExecutionBlocker
from graphgen.context import NodeContext
from graphgen.spec import (
    ALWAYS_RERUN,
    ANY,
    COMBO,
    CONSTANT_TYPES,
    ExecutionOutcome,
    InputSpec,
    NodeSpec,
    OutputSpec,
    split_types,
)

# Option names ComfyUI uses, mapped to InputSpec fields.
_OPTION_FIELDS = {"default": "default", "min": "min", "max": "max", "step": "step",
                  "multiline": "multiline", "forceInput": "force_link", "tooltip": "description",
                  "lazy": "lazy", "rawLink": "raw_link"}
# Hidden input types the engine fills; any other hidden input takes what the workflow gives.
_ENGINE_HIDDEN = frozenset({"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG",
                            "API_KEY_COMFY_ORG"})


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
            fields[field_name] = bool(options[key]) if field_name in ("lazy", "raw_link") else options[key]
    if isinstance(kind, (list, tuple)):
        choices = list(kind)
        fields.setdefault("default", choices[0] if choices else None)
        return InputSpec(name=name, type=COMBO, choices=choices, optional=optional, hidden=hidden, **fields)
    if kind == COMBO and "options" in options:
        return InputSpec(name=name, type=COMBO, choices=list(options["options"]), optional=optional,
                         hidden=hidden, **fields)
    type_name = str(kind)
    # ComfyUI passes a plain constant to an input of a custom type unchecked, and a workflow (or
    # an expansion) may set a hidden input the engine does not fill.
    loose = (hidden and type_name not in _ENGINE_HIDDEN) or (
        type_name != ANY and not any(t in CONSTANT_TYPES for t in split_types(type_name)))
    return InputSpec(name=name, type=type_name, optional=optional, hidden=hidden, loose_constant=loose, **fields)


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

    function_name = getattr(cls, "FUNCTION", None)
    if not function_name or not hasattr(cls, function_name):
        raise TypeError(f"FUNCTION names {function_name!r}, which the class does not define")
    function = getattr(cls, function_name)

    is_changed = getattr(cls, "IS_CHANGED", None)
    fingerprint = None
    if is_changed is not None:
        def fingerprint(constants: dict[str, Any], settings: Any = None) -> Hashable | None:
            value = _await_if_needed(is_changed(**constants))
            if isinstance(value, float) and math.isnan(value):
                # ComfyUI's idiom for "always re-run": NaN never equals itself.
                return ALWAYS_RERUN
            return repr(value)

    validate = getattr(cls, "VALIDATE_INPUTS", None)
    validate_takes: frozenset[str] | None = None
    wants_types = False
    if validate is not None:
        signature = inspect.signature(validate)
        parameters = signature.parameters.values()
        wants_types = "input_types" in signature.parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            validate_takes = frozenset(p.name for p in parameters if p.name != "input_types"
                                       and p.kind not in (inspect.Parameter.VAR_POSITIONAL,))

    check_lazy = None
    if callable(getattr(cls, "check_lazy_status", None)):
        def check_lazy(ctx: NodeContext, kwargs: dict[str, Any]) -> Any:
            return cls().check_lazy_status(**kwargs)  # type: ignore[attr-defined]

    n_outputs = len(outputs)

    def execute(ctx: NodeContext, kwargs: dict[str, Any]) -> Any:
        returned = getattr(cls(), function_name)(**kwargs)
        # inspect.isawaitable without its calls for plain values (see graphgen.node).
        if hasattr(type(returned), "__await__") or (type(returned) is GeneratorType and inspect.isawaitable(returned)):
            return _finish_async(returned, n_outputs, function_name)
        return _outcome(returned, n_outputs, function_name)

    output_is_list = tuple(bool(x) for x in (getattr(cls, "OUTPUT_IS_LIST", None) or ()))
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
        deterministic=True,
        fingerprint=fingerprint,
        style="comfyui-classic",
        source=cls,
        check_lazy=check_lazy,
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        output_is_list=output_is_list,
        validate_inputs=_validator(validate) if validate is not None else None,
        validate_takes=validate_takes,
        validate_wants_types=wants_types,
        fingerprint_links=True,
        accepts_undeclared=_takes_kwargs(function),
    )


def _takes_kwargs(function: Callable[..., Any]) -> bool:
    try:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False


def _validator(validate: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    def run(kwargs: dict[str, Any]) -> Any:
        return validate(**kwargs)

    return run


def _await_if_needed(value: Any) -> Any:
    if inspect.isawaitable(value):
        from graphgen.asyncutil import run_sync

        return run_sync(value)
    return value


async def _finish_async(returned: Any, n_outputs: int, function_name: str) -> ExecutionOutcome:
    return _outcome(await returned, n_outputs, function_name)


def _outcome(returned: Any, n_outputs: int, function_name: str) -> ExecutionOutcome:
    """A classic function's return: a tuple, a blocker, or `{"ui", "result", "expand"}`."""
    ui = None
    expand = None
    if isinstance(returned, dict):
        ui = returned.get("ui")
        expand = returned.get("expand")
        returned = returned.get("result", ())
        if returned is None:
            returned = ()
    if isinstance(returned, ExecutionBlocker):
        returned = (returned,) * n_outputs
    values = tuple(returned) if returned is not None else ()
    if expand is None and not values and n_outputs and ui is not None:
        values = (None,) * n_outputs  # an output node returning only UI data
    if len(values) != n_outputs:
        raise TypeError(f"{function_name}() returned {len(values)} values but RETURN_TYPES has {n_outputs}")
    return ExecutionOutcome(values=values, ui=ui, expand=expand)
