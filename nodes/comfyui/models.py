"""Model names → files under a ComfyUI-style models folder (`--models-dir`). Nothing is downloaded.

ComfyUI nodes name models, not paths: `sdxl.vae.safetensors` means `<models>/vae/sdxl.vae.safetensors`,
kijai's `Kwai-Kolors/Kolors` means `<models>/diffusers/Kolors`. This module finds them, and when a
model is missing says in one message which path it expected, what the folder holds and which
layout is accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphgen.checks import CheckContext, Problem
from graphgen.context import EngineSettings
from graphgen.paths import locate

__all__ = ["COMFYUI_LAYOUT", "MissingModelError", "find_model", "kolors_folder", "list_models", "model_check"]

COMFYUI_LAYOUT = (
    "accepted ComfyUI models-folder layout: diffusers/Kolors/ (the Kolors repository or Kolors-diffusers: "
    "unet/, text_encoder/, tokenizer/, vae/, scheduler/), vae/<file> (SDXL VAE, .safetensors), "
    "LLM/<file> (single-file ChatGLM3, e.g. chatglm3-fp16.safetensors), loras/<file>, unet/<file>"
)
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


class MissingModelError(FileNotFoundError):
    """A named model is not where the ComfyUI layout puts it (the message says where it looked)."""


def list_models(settings: EngineSettings | None, folder: str) -> list[str]:
    """Model files in `<models>/<folder>` (recursively, as relative names), sorted."""
    if settings is None or settings.models_dir is None:
        return []
    root = settings.models_dir / folder
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith("."))


def _missing(what: str, name: str, expected: list[Path], settings: EngineSettings | None, folder: str,
             extra: str = "") -> MissingModelError:
    lines = [f"{what} {name!r} not found: expected {expected[0]}"]
    if len(expected) > 1:
        lines[0] += " (also looked at " + ", ".join(str(p) for p in expected[1:]) + ")"
    if settings is None or settings.models_dir is None:
        lines.append(f"no models folder is set: run with --models-dir DIR (Engine(models_dir=DIR)), "
                     f"where DIR/{folder}/ holds it")
    else:
        where = settings.models_dir / folder
        if folder == "diffusers":
            found = sorted(p.name for p in where.glob("*") if p.is_dir()) if where.is_dir() else []
        else:
            found = list_models(settings, folder)
        shown = ", ".join(found[:12]) + (" ..." if len(found) > 12 else "")
        lines.append(f"{settings.models_dir / folder} holds: {shown}" if found
                     else f"{settings.models_dir / folder} holds no models")
    if extra:
        lines.append(extra)
    lines.append(COMFYUI_LAYOUT)
    lines.append("nothing is downloaded: put the file there, or give its full path")
    return MissingModelError("; ".join(lines))


def find_model(settings: EngineSettings | None, folder: str, name: str, what: str, *,
               allow_relative: bool = False, extra: str = "") -> Path:
    """The file `name` names: an absolute path, or `<models>/<folder>/<name>`.

    Args:
        settings: The engine's settings (its `models_dir`).
        folder: The ComfyUI models subfolder (`vae`, `LLM`, `loras`, `unet`).
        name: The name given in the workflow.
        what: What it is, for the message ("VAE", "LoRA"...).
        allow_relative: Also accept a path relative to the working folder (path-like inputs).
        extra: A sentence appended to the error.

    Raises:
        MissingModelError: one message naming the expected path and the accepted layout.
        graphgen.paths.PathNotAvailableError: in a confined run (the server), when it is missing or
            outside the engine's folders (one message for both).
    """
    return locate(settings, what, name, lambda: _find_model(settings, folder, name, what, allow_relative, extra))


def _find_model(settings: EngineSettings | None, folder: str, name: str, what: str, allow_relative: bool,
                extra: str) -> Path:
    given = Path(name).expanduser()
    if given.is_absolute():
        if given.exists():
            return given
        expected = [given]
        if settings is not None and settings.models_dir is not None:
            expected.append(settings.models_dir / folder / given.name)
            if expected[-1].exists():
                return expected[-1]
        raise _missing(what, name, expected, settings, folder, extra)
    expected = []
    if settings is not None and settings.models_dir is not None:
        expected.append(settings.models_dir / folder / given)
    if allow_relative:
        expected.append(given)
    for candidate in expected:
        if candidate.exists():
            return candidate
    if not expected:
        expected = [Path("<models>") / folder / given]
    raise _missing(what, name, expected, settings, folder, extra)


def kolors_folder(settings: EngineSettings | None, model: str, what: str = "Kolors model") -> Path:
    """The Kolors folder kijai's loaders use for `model` (e.g. `Kwai-Kolors/Kolors` → `<models>/diffusers/Kolors`).

    Raises:
        MissingModelError: when neither `diffusers/<name>` nor `diffusers/<org>/<name>` exists.
        graphgen.paths.PathNotAvailableError: in a confined run, when missing or outside the engine's folders.
    """
    return locate(settings, what, model, lambda: _kolors_folder(settings, model, what))


def _kolors_folder(settings: EngineSettings | None, model: str, what: str) -> Path:
    given = Path(model).expanduser()
    if given.is_absolute():
        if given.is_dir():
            return given
        raise _missing(what, model, [given], settings, "diffusers")
    short = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if settings is None or settings.models_dir is None:
        raise _missing(what, model, [Path("<models>") / "diffusers" / short], settings, "diffusers")
    root = settings.models_dir / "diffusers"
    expected = [root / short] + ([root / model] if short != model else [])
    for candidate in expected:
        if candidate.is_dir():
            return candidate
    raise _missing(what, model, expected, settings, "diffusers")


def model_check(folder: str, what: str, *, allow_relative: bool = False) -> Any:
    """A validation check: the named model exists where the loader will look (`find_model`, or
    `kolors_folder` for the `diffusers` folder), so a missing model is reported before anything loads."""

    def check(name: str, ctx: CheckContext) -> Problem | None:
        try:
            if folder == "diffusers":
                kolors_folder(ctx.settings, name, what)
            else:
                find_model(ctx.settings, folder, name, what, allow_relative=allow_relative)
        except MissingModelError as exc:
            message, _, rest = str(exc).partition("; ")
            return Problem(message, f"{rest}; or set it with --set {ctx.node_id}.{ctx.input.name}=FILE")
        return None

    return check
