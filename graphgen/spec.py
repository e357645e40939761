"""Node schemas: what a node type takes and gives, independent of how it was declared.

Both declaration styles (graphgen's `Node` classes and ComfyUI's classic `INPUT_TYPES` classes)
are turned into a `NodeSpec`; validation, the executor, `graphgen nodes` and the server only ever
look at specs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Types whose values can be written as constants in a workflow (ComfyUI calls them widgets).
INT = "INT"
FLOAT = "FLOAT"
STRING = "STRING"
BOOLEAN = "BOOLEAN"
COMBO = "COMBO"
ANY = "*"
CONSTANT_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})
ENGINE_HIDDEN = frozenset({"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT"})
"""Hidden input types the executor fills (ComfyUI's names): the node id, the API prompt, the
PNG info (`{"workflow": ...}`) and the run's live graph."""


class _Missing:
    """Sentinel for "no default" (None is a legitimate default)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _AlwaysRerun:
    """Returned by a fingerprint to say "outside state changed, re-run me every time"."""

    def __repr__(self) -> str:
        return "ALWAYS_RERUN"


ALWAYS_RERUN: Any = _AlwaysRerun()

Choices = Sequence[Any] | Callable[[], Sequence[Any]]


@dataclass(frozen=True)
class InputSpec:
    """One input of a node type.

    Attributes:
        name: Input name, as used in workflows.
        type: Type name (`INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO`, or a link type such as
            `LATENT`; several types may be joined with commas, `*` accepts anything).
        default: Value used when a workflow leaves the input out (`MISSING`: none).
        optional: The node runs without it (the node receives no argument for it).
        min, max, step: Bounds for numbers.
        choices: Allowed values, or a callable returning them (evaluated at validation time,
            e.g. the files in a models folder).
        choices_hint: Appended to a "not among the choices" error, e.g. which folder was listed.
        multiline: Text input shown as a text area.
        force_link: A constant-typed input that must come from a link.
        hidden: Supplied by the engine (ComfyUI `hidden` inputs), never by the workflow.
        description: Shown by `graphgen nodes` and in editors.
        lazy: A linked value is computed only when the node's `check_lazy` asks for it (until
            then the node sees None for it); unneeded branches never run.
        raw_link: The node receives the link itself (`[source id, output index]`), not the value
            (ComfyUI's `rawLink`, used by loop nodes that rebuild the graph).
        loose_constant: Any constant is accepted as it is, whatever the type (ComfyUI accepts a
            plain value for a custom type, and for hidden inputs an expansion sets).
        checks: Cheap checks of a constant value run at validation (`graphgen.checks`): a file
            that must exist, a value that must be a multiple of `step`... so that `validate`
            catches what would otherwise fail minutes into a run.
    """

    name: str
    type: str
    default: Any = MISSING
    optional: bool = False
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: Choices | None = None
    choices_hint: str = ""
    multiline: bool = False
    force_link: bool = False
    hidden: bool = False
    description: str = ""
    lazy: bool = False
    raw_link: bool = False
    loose_constant: bool = False
    checks: tuple[Callable[..., Any], ...] = ()

    @property
    def accepts_constant(self) -> bool:
        """Whether a workflow may give this input as a constant rather than a link."""
        if self.force_link:
            return False
        return self.type == ANY or any(t in CONSTANT_TYPES for t in split_types(self.type))

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    def resolve_choices(self) -> list[Any] | None:
        """Return the allowed values now (calls a dynamic choices function)."""
        if self.choices is None:
            return None
        values = self.choices() if callable(self.choices) else self.choices
        return list(values)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for `graphgen nodes --json` and editors)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "optional": self.optional}
        if self.has_default:
            out["default"] = self.default
        for key in ("min", "max", "step"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices is not None:
            try:
                out["choices"] = self.resolve_choices()
            except Exception as exc:  # a broken choices source must not break listing
                out["choices_error"] = str(exc)
        if self.multiline:
            out["multiline"] = True
        if self.force_link:
            out["force_link"] = True
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class OutputSpec:
    """One output of a node type."""

    type: str
    name: str = ""
    description: str = ""

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name or self.type.lower(), "type": self.type}
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class InputAlias:
    """A legacy name of an input: workflows written for an older version of a node still load.

    Attributes:
        name: The old input name (e.g. kijai's `kolors_model` on `KolorsTextEncode`).
        target: The current input it feeds.
        type: The type the old input took, when it differs (a link of this type is accepted and
            handed to the node under `target`; the node decides what to do with it).
    """

    name: str
    target: str
    type: str = ""


@dataclass
class ExecutionOutcome:
    """What running a node produced: its output values and optional UI data (saved files...).

    With `expand` set (a graph in API format, or an object with `.finalize()` returning one) the
    node expands: the graph's nodes run in the same run and a value in `values` that is a link
    `[node id, output index]` into that graph stands for that node's output.
    """

    values: tuple[Any, ...]
    ui: dict[str, Any] | None = None
    expand: Any = None


Executor = Callable[[Any, dict[str, Any]], Any]
"""`execute(context, kwargs)` -> an `ExecutionOutcome`, or an awaitable of one (async nodes)."""
Fingerprinter = Callable[[dict[str, Any], Any], Hashable | None]
"""`fingerprint(constants, settings)`: settings are the engine's `EngineSettings` (folders)."""
LazyCheck = Callable[[Any, dict[str, Any]], Any]
"""`check_lazy(context, kwargs)` -> names of lazy inputs needed now (or an awaitable of them)."""
InputValidator = Callable[[dict[str, Any]], Any]
"""`validate_inputs(kwargs)` -> True, or a message saying what is wrong (or an awaitable of it)."""


@dataclass
class NodeSpec:
    """Everything the engine knows about a node type.

    `execute(context, kwargs)` runs the node; `fingerprint(constants, settings)` returns a value describing
    outside state (a file's size and mtime...) that is folded into the cache key. A node whose
    `deterministic` is False is never served from the cache.

    ComfyUI's execution model is expressed by these fields (both node styles, and adapters such
    as the `comfy_api` schema nodes, set them; the executor and validation read only these):

    - `check_lazy(context, kwargs)`: for nodes with `lazy` inputs; kwargs hold every input
      (None for lazy ones not computed yet); returns the names it needs now. Called again after
      each batch it asked for, until it needs nothing more. May be async.
    - `input_is_list`: the node receives every input as a list (one call per run) instead of
      being called once per item of list inputs (the longest list wins, shorter ones repeat
      their last item).
    - `output_is_list`: per output, whether the value the node returns is itself a list whose
      items are the output's items (otherwise each call contributes one item).
    - `validate_inputs(kwargs)`: custom validation at validation time (ComfyUI's
      `VALIDATE_INPUTS`); kwargs hold the constants it takes (None for linked inputs), and
      `input_types` (linked input -> producing type) when `validate_wants_types`. It replaces the
      built-in checks of the inputs it takes: `validate_takes` names them, None means all of
      them (a `**kwargs` function). Returns True or an error message; may be async.
    - `validate_wants_types`: also skips the built-in type check of links.
    - `fingerprint_links`: the fingerprint also receives linked inputs, as None (ComfyUI's
      `IS_CHANGED` signature).
    - `accepts_undeclared`: links to inputs the node does not declare are passed to it (a
      function taking `**kwargs`) instead of being a validation error.

    `execute` may return an awaitable (an `async def` node): independent async nodes run
    concurrently on the run's event loop. Values may be `graphgen.blocker.ExecutionBlocker`s.
    """

    type_name: str
    inputs: dict[str, InputSpec]
    outputs: list[OutputSpec]
    execute: Executor
    category: str = "misc"
    display_name: str = ""
    description: str = ""
    version: str = "1"
    output_node: bool = False
    deterministic: bool = True
    fingerprint: Fingerprinter | None = None
    pack: str = ""
    style: str = "graphgen"
    source: Any = field(default=None, repr=False)
    check_lazy: LazyCheck | None = field(default=None, repr=False)
    input_is_list: bool = False
    output_is_list: tuple[bool, ...] = ()
    validate_inputs: InputValidator | None = field(default=None, repr=False)
    validate_takes: frozenset[str] | None = None
    validate_wants_types: bool = False
    fingerprint_links: bool = False
    accepts_undeclared: bool = False

    def output_list_flags(self) -> tuple[bool, ...]:
        """`output_is_list` padded to one flag per output."""
        flags = tuple(self.output_is_list)[: len(self.outputs)]
        return flags + (False,) * (len(self.outputs) - len(flags))

    @functools.cached_property
    def list_flags(self) -> tuple[bool, ...]:
        """`output_list_flags()`, computed once."""
        return self.output_list_flags()

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        """Each output's name (its index as text where it has none)."""
        return tuple(o.name or str(i) for i, o in enumerate(self.outputs))

    @functools.cached_property
    def lazy_inputs(self) -> frozenset[str]:
        """Names of the lazy inputs (computed once: the executor asks for every node)."""
        return frozenset(name for name, spec in self.inputs.items() if spec.lazy)

    @functools.cached_property
    def engine_hidden(self) -> tuple[tuple[str, str], ...]:
        """`(name, kind)` of hidden inputs the executor fills (UNIQUE_ID, PROMPT...)."""
        return tuple((name, spec.type) for name, spec in self.inputs.items()
                     if spec.hidden and spec.type in ENGINE_HIDDEN)

    @functools.cached_property
    def raw_link_inputs(self) -> frozenset[str]:
        return frozenset(name for name, spec in self.inputs.items() if spec.raw_link)
    aliases: dict[str, InputAlias] = field(default_factory=dict)
    """Legacy input names (of the node packs graphgen mirrors) accepted in workflows, by old name."""

    @functools.cached_property
    def plain_call(self) -> bool:
        """Whether the executor may call this node the plain way: no lazy inputs, no list
        inputs, no raw links (then one call per run unless an input holds several items)."""
        return (not self.input_is_list and not self.lazy_inputs and not self.raw_link_inputs
                and self.check_lazy is None)

    def output_index(self, ref: int | str) -> int | None:
        """Index of an output given by index or by name, None when there is no such output."""
        if isinstance(ref, bool):
            return None
        if isinstance(ref, int):
            return ref if 0 <= ref < len(self.outputs) else None
        for index, output in enumerate(self.outputs):
            if output.name == ref:
                return index
        return None

    def describe(self) -> dict[str, Any]:
        """A JSON-able description of the node type."""
        return {
            "type": self.type_name,
            "display_name": self.display_name or self.type_name,
            "category": self.category,
            "description": self.description,
            "version": self.version,
            "pack": self.pack,
            "style": self.style,
            "output_node": self.output_node,
            "deterministic": self.deterministic,
            "inputs": [i.describe() for i in self.inputs.values() if not i.hidden],
            "outputs": [o.describe() for o in self.outputs],
        }


@functools.lru_cache(maxsize=4096)
def split_types(type_name: str) -> tuple[str, ...]:
    """`"IMAGE,MASK"` -> `("IMAGE", "MASK")` (ComfyUI's union notation)."""
    return tuple(t.strip() for t in type_name.split(",") if t.strip())


def types_compatible(produced: str, expected: str) -> bool:
    """Whether an output of type `produced` may feed an input of type `expected`."""
    if produced == expected or produced == ANY or expected == ANY:
        return True
    produced_set = set(split_types(produced))
    expected_set = set(split_types(expected))
    if COMBO in expected_set:
        # A combo input may be fed by any string/number producer (e.g. a primitive node).
        expected_set |= {STRING, INT, FLOAT}
    return bool(produced_set & expected_set)


class ConstantError(ValueError):
    """A constant does not fit its input. `code` is the validation error code."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


_TYPE_WORDS = {INT: "an integer", FLOAT: "a number", STRING: "a text string", BOOLEAN: "true or false",
               COMBO: "one of the allowed values"}


def type_words(type_name: str) -> str:
    """`"INT"` -> `"an integer"`, for messages."""
    return " or ".join(_TYPE_WORDS.get(t, t) for t in split_types(type_name))


def _type_label(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def coerce_constant(spec: InputSpec, value: Any) -> Any:
    """Check a constant against its input spec and return it in canonical form.

    Integral floats become ints for INT inputs (JSON writers sometimes emit `5.0`). Raises
    `ConstantError` naming what was expected.
    """
    # Fast paths for the common cases (this runs for every constant of every run).
    kind = type(value)
    if spec.choices is None:
        if spec.type == INT and kind is int:
            return value if spec.min is None and spec.max is None else _check_range(spec, value)
        if spec.type == FLOAT and kind is float and math.isfinite(value):
            return value if spec.min is None and spec.max is None else _check_range(spec, value)
        if spec.type == STRING and kind is str:
            return value
    types = split_types(spec.type)
    if spec.type == ANY:
        return value
    if spec.choices is not None or COMBO in types:
        return _check_choice(spec, value)
    if INT in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConstantError("invalid_constant_type", f"expects a whole number, got {value!r}",
                                    "give a finite integer")
            if not value.is_integer():
                raise ConstantError("invalid_constant_type", f"expects a whole number, got {value!r}",
                                    f"use an integer such as {int(value)}")
            value = int(value)
        return _check_range(spec, value)
    if FLOAT in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConstantError("invalid_constant_type", f"expects a finite number, got {value!r}",
                                "give a finite number")
        return _check_range(spec, float(value))
    if STRING in types and isinstance(value, str):
        return value
    if BOOLEAN in types and isinstance(value, bool):
        return value
    if spec.loose_constant:
        return value
    expected = type_words(spec.type)
    if not spec.accepts_constant:
        raise ConstantError(
            "invalid_constant_type",
            f"expects a link from a node producing {spec.type}, got a constant {_type_label(value)}",
            f'connect it as ["<node id>", <output index>] to a node that outputs {spec.type}',
        )
    raise ConstantError("invalid_constant_type", f"expects {expected}, got {_type_label(value)} {_short(value)}",
                        f"give {expected}")


def _check_range(spec: InputSpec, value: float) -> Any:
    if spec.min is not None and value < spec.min:
        raise ConstantError("value_smaller_than_min", f"{value} is smaller than the minimum {spec.min}",
                            f"use a value between {spec.min} and {spec.max if spec.max is not None else 'any'}")
    if spec.max is not None and value > spec.max:
        raise ConstantError("value_bigger_than_max", f"{value} is bigger than the maximum {spec.max}",
                            f"use a value between {spec.min if spec.min is not None else 'any'} and {spec.max}")
    return value


def _check_choice(spec: InputSpec, value: Any) -> Any:
    import difflib

    choices = spec.resolve_choices() or []
    if any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in choices):
        return value
    shown = ", ".join(repr(c) for c in choices[:12]) + (" ..." if len(choices) > 12 else "")
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    hint += f"allowed: {shown}" if choices else "there are no allowed values right now"
    if spec.choices_hint:
        hint += f"; {spec.choices_hint}"
    raise ConstantError("value_not_in_list", f"{_short(value)} is not among the allowed values", hint)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_all(specs: Mapping[str, NodeSpec]) -> list[dict[str, Any]]:
    """Descriptions of many specs, sorted by type name."""
    return [specs[name].describe() for name in sorted(specs)]
