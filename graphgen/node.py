"""Declaring nodes the graphgen way: a class with typed inputs, outputs and a `run` method.

    from graphgen.node import Node, Int, String, Output

    class Repeat(Node):
        \"\"\"Repeat a text.\"\"\"
        category = "text"
        inputs = [String("text", multiline=True), Int("times", default=2, min=1, max=100)]
        outputs = [Output("STRING", "text")]

        def run(self, text: str, times: int) -> str:
            return text * times

`run` receives the inputs as keyword arguments (optional inputs that are not given are left out)
and returns one value per output (a tuple, or the bare value for a single output, or a `Result`
to attach UI data such as saved file names). `self.ctx` gives progress, cancellation, warnings,
folders and shared resources.

The rest of the execution model is opt-in:

- `Int("x", lazy=True)` (any input): computed only when `check_lazy_status(**inputs)` returns
  its name (it sees None for lazy inputs not computed yet); unneeded branches never run.
- `async def run(...)`: awaited; independent async nodes run concurrently.
- `input_is_list = True` / `output_is_list = (True, ...)`: list mapping, as in ComfyUI.
- `validate_inputs(cls, **constants)` (classmethod): custom checks at validation time; returns
  True or a message, and replaces the built-in checks of the inputs it names.
- `Result(..., expand=graph)`: run a graph in this node's place (values may link into it).
- Returning `graphgen.blocker.ExecutionBlocker(...)` for an output blocks what depends on it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from types import GeneratorType
from typing import Any, ClassVar

from graphgen.blocker import ExecutionBlocker
from graphgen.context import NodeContext
from graphgen.spec import (
    ALWAYS_RERUN,
    BOOLEAN,
    COMBO,
    FLOAT,
    INT,
    MISSING,
    STRING,
    Choices,
    ExecutionOutcome,
    InputAlias,
    InputSpec,
    NodeSpec,
    OutputSpec,
)

__all__ = [
    "Node", "Result", "Output", "Input", "Int", "Float", "String", "Bool", "Choice", "Link", "InputAlias",
]


def Input(name: str, type: str, **options: Any) -> InputSpec:  # noqa: N802 - reads like a type
    """Any input: `Input("model", "KOLORS_UNET", description=...)`."""
    return InputSpec(name=name, type=type, **options)


def Int(name: str, default: int = MISSING, *, min: int | None = None, max: int | None = None,  # noqa: N802
        step: int | None = None, **options: Any) -> InputSpec:
    """An integer input (a constant or a link from an INT output)."""
    return InputSpec(name=name, type=INT, default=default, min=min, max=max, step=step, **options)


def Float(name: str, default: float = MISSING, *, min: float | None = None, max: float | None = None,  # noqa: N802
          step: float | None = None, **options: Any) -> InputSpec:
    """A floating-point input."""
    return InputSpec(name=name, type=FLOAT, default=default, min=min, max=max, step=step, **options)


def String(name: str, default: str = MISSING, *, multiline: bool = False, **options: Any) -> InputSpec:  # noqa: N802
    """A text input; `multiline` shows a text area in editors."""
    return InputSpec(name=name, type=STRING, default=default, multiline=multiline, **options)


def Bool(name: str, default: bool = MISSING, **options: Any) -> InputSpec:  # noqa: N802
    """A boolean input."""
    return InputSpec(name=name, type=BOOLEAN, default=default, **options)


def Choice(name: str, choices: Choices, default: Any = MISSING, **options: Any) -> InputSpec:  # noqa: N802
    """One of a list of values; `choices` may be a callable evaluated at validation time."""
    if default is MISSING and not callable(choices) and len(choices) > 0:
        default = list(choices)[0]
    return InputSpec(name=name, type=COMBO, choices=choices, default=default, **options)


def Link(name: str, type: str, **options: Any) -> InputSpec:  # noqa: N802
    """An input that must come from another node's output of the given type."""
    return InputSpec(name=name, type=type, force_link=True, **options)


@dataclass(frozen=True)
class Output:
    """Declares an output: `Output("LATENT", "latent")`."""

    type: str
    name: str = ""
    description: str = ""


@dataclass
class Result:
    """Return this from `run` to attach UI data (e.g. `{"images": [...]}`) to the outputs, or a
    graph to expand into (`expand`: an API-format dict or a builder with `.finalize()`; values
    may then be links `[node id, output index]` into it)."""

    values: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = field(default=None)
    expand: Any = None

    def __init__(self, *values: Any, ui: dict[str, Any] | None = None, expand: Any = None) -> None:
        self.values = values
        self.ui = ui
        self.expand = expand


class Node:
    """Base class for graphgen nodes. Subclasses set the class attributes and implement `run`."""

    type_name: ClassVar[str] = ""
    """Name used in workflows; defaults to the class name."""
    display_name: ClassVar[str] = ""
    category: ClassVar[str] = "misc"
    description: ClassVar[str] = ""
    """Defaults to the class docstring."""
    version: ClassVar[str | int] = "1"
    """Bump it when the node's behaviour changes, so that cached results are not reused."""
    inputs: ClassVar[Sequence[InputSpec]] = ()
    outputs: ClassVar[Sequence[Output]] = ()
    output_node: ClassVar[bool] = False
    """An output node saves or shows a result; only nodes that lead to one run."""
    deterministic: ClassVar[bool] = True
    """False: never served from the cache (the node has internal randomness or side effects)."""
    input_is_list: ClassVar[bool] = False
    """True: `run` receives every input as a list and is called once (list mapping)."""
    output_is_list: ClassVar[Sequence[bool]] = ()
    """Per output: `run` returns a list whose items are that output's items."""
    aliases: ClassVar[Sequence[InputAlias]] = ()
    """Legacy input names still accepted in workflows, e.g. `InputAlias("kolors_model", "chatglm3_model",
    type="KOLORSMODEL")` for workflows written for an older version of the node pack it mirrors."""

    ctx: NodeContext

    # Subclasses define these two with their own parameters (typed as loose callables here so
    # that a subclass's `run(self, text: str, times: int)` is a valid override):
    #
    #   def run(self, **inputs) -> Any
    #       Receives the inputs as keyword arguments; returns the outputs.
    #
    #   @classmethod
    #   def fingerprint(cls, **constants) -> Hashable | None
    #       Describe outside state the node reads (e.g. a file's size and mtime). Receives the
    #       node's constant inputs (and the engine's `EngineSettings` as `settings`, if it declares
    #       that parameter). The value is folded into the cache key, so the node re-runs when it
    #       changes; returning `graphgen.spec.ALWAYS_RERUN` re-runs the node every time.
    run: Callable[..., Any]
    fingerprint: Callable[..., Hashable | None]

    @classmethod
    def spec(cls) -> NodeSpec:
        """Build the `NodeSpec` for this class."""
        name = cls.type_name or cls.__name__
        inputs: dict[str, InputSpec] = {}
        for item in cls.inputs:
            if item.name in inputs:
                raise TypeError(f"node {name}: input {item.name!r} is declared twice")
            inputs[item.name] = item
        outputs = [OutputSpec(type=o.type, name=o.name or o.type.lower(), description=o.description)
                   for o in cls.outputs]
        if not callable(getattr(cls, "run", None)):
            raise TypeError(f"node class {cls.__name__} defines no run() method")
        fingerprint = None
        declared = getattr(cls, "fingerprint", None)
        if callable(declared):
            parameters = inspect.signature(declared).parameters
            wants_settings = "settings" in parameters
            # The inputs it cannot do without; one that is linked (a file name another node outputs,
            # e.g. TrainLoRA's lora_path into LoraLoader) is known only once the run gets there.
            needed = [n for n, p in parameters.items() if n in inputs and p.default is inspect.Parameter.empty
                      and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

            def fingerprint(constants: dict[str, Any], settings: Any = None) -> Hashable | None:
                if any(n not in constants for n in needed):
                    # The outside state it names cannot be described before running: run it every
                    # time (and what uses it), rather than risk a stale result.
                    return ALWAYS_RERUN
                if wants_settings:
                    return declared(**constants, settings=settings)
                return declared(**constants)
        check_lazy = None
        if callable(getattr(cls, "check_lazy_status", None)):
            def check_lazy(ctx: NodeContext, kwargs: dict[str, Any]) -> Any:
                node = cls()
                node.ctx = ctx
                return node.check_lazy_status(**kwargs)  # type: ignore[attr-defined]
        validate = getattr(cls, "validate_inputs", None)
        validate_takes: frozenset[str] | None = None
        wants_types = False
        if callable(validate):
            parameters = inspect.signature(validate).parameters
            wants_types = "input_types" in parameters
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                validate_takes = frozenset(n for n in parameters if n != "input_types")

            def validate_inputs(kwargs: dict[str, Any]) -> Any:
                return validate(**kwargs)
        else:
            validate_inputs = None  # type: ignore[assignment]
        return NodeSpec(
            type_name=name,
            inputs=inputs,
            outputs=outputs,
            execute=_make_executor(cls, len(outputs)),
            check_lazy=check_lazy,
            input_is_list=cls.input_is_list,
            output_is_list=tuple(bool(x) for x in cls.output_is_list),
            validate_inputs=validate_inputs,
            validate_takes=validate_takes,
            validate_wants_types=wants_types,
            category=cls.category,
            display_name=cls.display_name or name,
            description=(cls.description or (cls.__doc__ or "")).strip(),
            version=str(cls.version),
            output_node=cls.output_node,
            deterministic=cls.deterministic,
            fingerprint=fingerprint,
            style="graphgen",
            source=cls,
            aliases=_aliases(name, inputs, cls.aliases),
        )


def _aliases(name: str, inputs: dict[str, InputSpec], declared: Sequence[InputAlias]) -> dict[str, InputAlias]:
    aliases: dict[str, InputAlias] = {}
    for alias in declared:
        if alias.target not in inputs:
            raise TypeError(f"node {name}: alias {alias.name!r} names no input {alias.target!r}")
        if alias.name in inputs or alias.name in aliases:
            raise TypeError(f"node {name}: alias {alias.name!r} is already an input or an alias")
        aliases[alias.name] = alias
    return aliases


def _make_executor(cls: type[Node], n_outputs: int) -> Any:
    def execute(ctx: NodeContext, kwargs: dict[str, Any]) -> ExecutionOutcome | Awaitable[ExecutionOutcome]:
        node = cls()
        node.ctx = ctx
        returned = node.run(**kwargs)
        # inspect.isawaitable, without its calls for the usual plain value (a coroutine, a
        # future or any object with __await__; old generator-based coroutines asked the slow way).
        if hasattr(type(returned), "__await__") or (type(returned) is GeneratorType and inspect.isawaitable(returned)):
            return _finish_async(returned, n_outputs, cls.type_name or cls.__name__)
        return normalize_return(returned, n_outputs, cls.type_name or cls.__name__)

    return execute


async def _finish_async(returned: Any, n_outputs: int, type_name: str) -> ExecutionOutcome:
    return normalize_return(await returned, n_outputs, type_name)


def normalize_return(returned: Any, n_outputs: int, type_name: str) -> ExecutionOutcome:
    """Turn what `run` returned into an `ExecutionOutcome`, checking the number of values."""
    ui = None
    expand = None
    if isinstance(returned, Result):
        values, ui, expand = returned.values, returned.ui, returned.expand
    elif isinstance(returned, ExecutionBlocker):
        values = (returned,) * n_outputs
    elif n_outputs == 1 and not (isinstance(returned, tuple) and len(returned) == 1):
        values = (returned,)
    elif returned is None:
        values = ()
    elif isinstance(returned, (tuple, list)):
        values = tuple(returned)
    else:
        values = (returned,)
    if len(values) != n_outputs:
        raise TypeError(f"node type {type_name} returned {len(values)} values but declares {n_outputs} outputs")
    return ExecutionOutcome(values=tuple(values), ui=ui, expand=expand)
