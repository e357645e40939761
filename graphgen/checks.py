"""Cheap checks that nodes declare on their inputs, run at validation time.

Some failures are knowable before anything runs, but only the node knows how to look: a model
folder that is missing or lacks its `unet/`, an input image that is not there, a dataset without
captions, a width that is not a multiple of the step the node needs. An input declares such checks
(`InputSpec.checks`); `graphgen validate` and the start of `graphgen run` run them on the input's
constant value, so the user hears about it in one line, with exit code 2, instead of minutes into
a run after the models have loaded.

A check is a callable `check(value, ctx) -> Problem | str | None` (a string is a message without a
hint). It must be cheap: stat a few files, read a small metadata file, never load weights.

    from graphgen.checks import Problem, multiple_of_step

    def image_exists(value: str, ctx: CheckContext) -> Problem | None:
        path = ctx.input_dir / value
        return None if path.is_file() else Problem(f"{value!r} is not in {ctx.input_dir}", "put it there")

    inputs = [String("image", checks=(image_exists,)), Int("width", default=1024, step=8, checks=(multiple_of_step,))]

Every text constant is also checked to be encodable as UTF-8 (`text_problem`): a lone surrogate
(from a `\\udXXX` JSON escape, or bytes that are not UTF-8 on a command line) would otherwise fail
when the text is written into a PNG, a file name or a tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphgen.errors import Issue

if TYPE_CHECKING:
    from graphgen.context import EngineSettings
    from graphgen.spec import InputSpec, NodeSpec

__all__ = ["CheckContext", "Problem", "InputCheck", "multiple_of_step", "run_checks", "text_problem",
           "models_dir_hint"]


@dataclass(frozen=True)
class Problem:
    """What a check found wrong: the message and how to fix it."""

    message: str
    hint: str = ""


@dataclass(frozen=True)
class CheckContext:
    """What a check may look at besides the value: the engine's folders, the input's spec, and the
    types linked into the node's other inputs (`linked_type`)."""

    settings: EngineSettings | None
    node_id: str
    node_type: str
    input: InputSpec
    links: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    specs: Mapping[str, NodeSpec] = field(default_factory=dict)

    def linked_type(self, input_name: str) -> str | None:
        """The type of the output linked into `input_name` of this node (e.g. `"KOLORS_UNET"`), or None.

        Lets a check refuse a value that cannot work with what is connected (a text-encoder learning
        rate for a model family whose text encoder does not train), before anything runs.
        """
        link = self.links.get(input_name)
        source = self.specs.get(link[0]) if link is not None else None
        if source is None or link is None or not 0 <= link[1] < len(source.outputs):
            return None
        return source.outputs[link[1]].type

    @property
    def models_dir(self) -> Path | None:
        return self.settings.models_dir if self.settings is not None else None

    @property
    def input_dir(self) -> Path:
        return self.settings.input_dir if self.settings is not None else Path("input")


InputCheck = Callable[[Any, CheckContext], "Problem | str | None"]


def models_dir_hint(settings: EngineSettings | None) -> str:
    """The sentence every "model not found" message ends with: how `--models-dir` helps."""
    if settings is None or settings.models_dir is None:
        return ("no --models-dir is set: give the full path, or run with --models-dir DIR (the folder holding "
                "your models); `graphgen tiny-models DIR` writes tiny random ones to try")
    return (f"relative paths are also looked up under --models-dir {settings.models_dir}: give the full path, "
            "or point --models-dir at the folder that holds the model")


def multiple_of_step(value: Any, ctx: CheckContext) -> Problem | None:
    """An integer must be a multiple of its input's `step` (e.g. image sizes in steps of 8)."""
    step = ctx.input.step
    if not step or isinstance(value, bool) or not isinstance(value, int) or step != int(step) or step <= 1:
        return None
    step = int(step)
    if value % step == 0:
        return None
    lower, upper = value - value % step, value - value % step + step
    if ctx.input.min is not None and lower < ctx.input.min:
        options = f"{upper}"
    elif ctx.input.max is not None and upper > ctx.input.max:
        options = f"{lower}"
    else:
        options = f"{lower} or {upper}"
    return Problem(f"{value} is not a multiple of {step}", f"use a multiple of {step}, e.g. {options}")


def text_problem(text: str) -> Problem | None:
    """A text that cannot be written as UTF-8 (it holds a lone surrogate), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        origin = ("bytes that are not UTF-8 (the command line or a file in another encoding)"
                  if 0xDC80 <= ord(bad) <= 0xDCFF else f"a lone surrogate \\u{ord(bad):04x} (a broken JSON escape)")
        return Problem(f"the text is not valid Unicode: character {exc.start + 1} is {origin}",
                       "give the text as UTF-8 (re-save the file as UTF-8, or fix the escape)")
    return None


def run_checks(node_id: str, spec: NodeSpec, constants: dict[str, Any],
               settings: EngineSettings | None, links: Mapping[str, tuple[str, int]] | None = None,
               specs: Mapping[str, NodeSpec] | None = None) -> list[Issue]:
    """Run the declared checks of every constant input of one node, and the text check.

    A check that raises is reported as a problem of that input (a broken check must not make
    validation crash), naming the exception; a `FileNotFoundError` is reported by its message.
    """
    issues: list[Issue] = []
    for name, value in constants.items():
        input_spec = spec.inputs.get(name)
        if input_spec is None:
            continue
        found: list[Problem] = []
        if isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                found.append(problem)
        if not found and input_spec.checks:
            ctx = CheckContext(settings=settings, node_id=node_id, node_type=spec.type_name, input=input_spec,
                               links=links or {}, specs=specs or {})
            for check in input_spec.checks:
                try:
                    outcome = check(value, ctx)
                except FileNotFoundError as exc:  # e.g. a path a confined (server) run may not read
                    outcome = Problem(str(exc))
                except Exception as exc:  # noqa: BLE001 - reported, not raised
                    outcome = Problem(f"could not be checked: {type(exc).__name__}: {exc}")
                if isinstance(outcome, str):
                    outcome = Problem(outcome)
                if outcome is not None:
                    found.append(outcome)
                    break  # one problem per input: later checks usually depend on earlier ones
        issues.extend(Issue(code="check_failed", message=p.message, node_id=node_id, node_type=spec.type_name,
                            input=name, hint=p.hint) for p in found)
    return issues
