"""Adapter for nodes written against ComfyUI's schema API (`comfy_api.latest.io.ComfyNode`).

A schema node declares `define_schema()` and a classmethod `execute(...)` returning
`io.NodeOutput`. It is turned into an equivalent classic class (INPUT_TYPES, RETURN_TYPES,
check_lazy_status, VALIDATE_INPUTS, IS_CHANGED, INPUT_IS_LIST/OUTPUT_IS_LIST...) and then into a
`NodeSpec` by the classic adapter, so both styles share every execution rule (lazy inputs,
expansion, list mapping, async, validation).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from graphgen.compat.comfy_api.latest import _io as io
from graphgen.spec import NodeSpec

_FUNCTION = "execute_schema_node"


def is_schema_node(obj: Any) -> bool:
    """Whether `obj` is an `io.ComfyNode` subclass (other than the base classes)."""
    return isinstance(obj, type) and issubclass(obj, io.ComfyNode) and obj not in (io.ComfyNode, io.ComfyNodeV3)


def _overrides(cls: type, name: str) -> bool:
    """Whether `cls` defines `name` itself rather than inheriting the base's."""
    return any(name in vars(klass) for klass in cls.__mro__ if klass not in (io.ComfyNode, io.ComfyNodeV3, object))


def _classmethod_proxy(bound: Any) -> Any:
    """A staticmethod calling `bound`, whose signature (read by the engine) is `bound`'s."""
    if inspect.iscoroutinefunction(bound):
        @functools.wraps(bound)
        async def async_proxy(*args: Any, **kwargs: Any) -> Any:
            return await bound(*args, **kwargs)

        return staticmethod(async_proxy)

    @functools.wraps(bound)
    def proxy(*args: Any, **kwargs: Any) -> Any:
        return bound(*args, **kwargs)

    return staticmethod(proxy)


def _normalized(output: Any, outputs: int) -> Any:
    """`io.NodeOutput` -> the classic return shape (`{"result", "ui", "expand"}` or a tuple)."""
    if not isinstance(output, io.NodeOutput):
        return output
    if output.block_execution is not None:
        from graphgen.compat.comfy_execution.graph import ExecutionBlocker

        values: tuple[Any, ...] = tuple(ExecutionBlocker(output.block_execution) for _ in range(outputs))
    else:
        values = output.args
    result: dict[str, Any] = {"result": values}
    if output.ui is not None:
        result["ui"] = output.ui.as_dict() if hasattr(output.ui, "as_dict") else output.ui
    if output.expand is not None:
        result["expand"] = output.expand
    return result


def classic_class(cls: type[io.ComfyNode]) -> type:
    """An equivalent classic node class for the schema node `cls`."""
    schema = cls.GET_SCHEMA()
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for item in schema.inputs:
        (optional if item.optional else required)[item.id] = item.classic()
    hidden = {member.name: member.value for member in schema.hidden}
    hidden_names = tuple(hidden)
    outputs = len(schema.outputs)

    def with_hidden(kwargs: dict[str, Any]) -> type[io.ComfyNode]:
        values = {name: kwargs.pop(name, None) for name in hidden_names}
        # A subclass per call holds `cls.hidden`, so that concurrent calls don't share it.
        return type(cls.__name__, (cls,), {"hidden": io.HiddenHolder(values)})

    namespace: dict[str, Any] = {
        "INPUT_TYPES": classmethod(lambda _: {"required": dict(required), "optional": dict(optional),
                                              "hidden": dict(hidden)}),
        "RETURN_TYPES": tuple(o.get_io_type() for o in schema.outputs),
        "RETURN_NAMES": tuple(o.name for o in schema.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_output_list for o in schema.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip or "" for o in schema.outputs),
        "INPUT_IS_LIST": schema.is_input_list,
        "OUTPUT_NODE": schema.is_output_node,
        "CATEGORY": schema.category,
        "DESCRIPTION": schema.description,
        "DEPRECATED": schema.is_deprecated,
        "EXPERIMENTAL": schema.is_experimental,
        "NOT_IDEMPOTENT": schema.not_idempotent,
        "FUNCTION": _FUNCTION,
        "__doc__": cls.__doc__,
        "__module__": cls.__module__,
    }
    if inspect.iscoroutinefunction(cls.execute):
        async def execute_async(self: Any, **kwargs: Any) -> Any:
            coroutine: Any = with_hidden(kwargs).execute(**kwargs)  # an `async def execute`
            return _normalized(await coroutine, outputs)

        namespace[_FUNCTION] = execute_async
    else:
        def execute(self: Any, **kwargs: Any) -> Any:
            return _normalized(with_hidden(kwargs).execute(**kwargs), outputs)

        namespace[_FUNCTION] = execute
    if _overrides(cls, "check_lazy_status"):
        bound_lazy = cls.check_lazy_status  # type: ignore[attr-defined]

        @functools.wraps(bound_lazy)
        def check_lazy_status(self: Any, *args: Any, **kwargs: Any) -> Any:
            return bound_lazy(*args, **kwargs)

        namespace["check_lazy_status"] = check_lazy_status
    if _overrides(cls, "validate_inputs"):
        namespace["VALIDATE_INPUTS"] = _classmethod_proxy(cls.validate_inputs)  # type: ignore[attr-defined]
    if _overrides(cls, "fingerprint_inputs"):
        namespace["IS_CHANGED"] = _classmethod_proxy(cls.fingerprint_inputs)  # type: ignore[attr-defined]
    return type(cls.__name__, (), namespace)


def schema_spec(cls: type[io.ComfyNode], type_name: str | None = None, display_name: str = "") -> NodeSpec:
    """The `NodeSpec` of a schema node (its type name is the schema's `node_id` unless given)."""
    from graphgen.comfy_classic import classic_spec

    schema = cls.GET_SCHEMA()
    spec = classic_spec(type_name or schema.node_id, classic_class(cls),
                        display_name or schema.display_name or "")
    spec.style = "comfyui-schema"
    spec.source = cls
    return spec
