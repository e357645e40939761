"""`/api/object_info`: ComfyUI's node definitions, generated from graphgen's node specs.

Every registered node type (built-in, installed pack or plugin folder) is described in the shape
ComfyUI's editor reads: `input` (`required` / `optional` / `hidden`), `input_order`, `output`,
`output_name`, `output_is_list`, `category`, `output_node`... Widget inputs use ComfyUI's forms:
`["INT", {"default", "min", "max", "step"}]`, a list of values for a combo, `["STRING",
{"multiline": true}]`; link inputs are their type name (`["LATENT"]`).

Which inputs become widgets, and their order, is `graphgen.formats`' one rule, which the editor
workflow reader and the template writer share, so that `widgets_values` line up with the widgets.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphgen.formats import WIDGET_TYPES, editor_inputs, is_seed, is_widget
from graphgen.spec import COMBO, FLOAT, INT, STRING, InputSpec, NodeSpec, split_types

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def input_definition(spec: InputSpec, choices_override: list[Any] | None = None) -> list[Any]:
    """One input in ComfyUI's form: `[TYPE or [choices], {options}]`."""
    options: dict[str, Any] = {}
    if spec.description:
        options["tooltip"] = spec.description
    if spec.has_default:
        options["default"] = _json_value(spec.default)
    if spec.lazy:
        options["lazy"] = True
    if not is_widget(spec):
        if spec.force_link and any(t in WIDGET_TYPES or t == COMBO for t in split_types(spec.type)):
            options["forceInput"] = True
        return [spec.type, options] if options else [spec.type]
    if spec.choices is not None or spec.type == COMBO:
        choices = choices_override
        if choices is None:
            try:
                choices = spec.resolve_choices() or []
            except Exception:  # a broken choices source must not hide the node
                choices = []
        values = [_json_value(c) for c in choices]
        if "default" in options and options["default"] not in values and values:
            options["default"] = values[0]
        return [values, options]
    for key in ("min", "max", "step"):
        value = getattr(spec, key)
        if value is not None and math.isfinite(value):
            options[key] = int(value) if spec.type == INT else float(value)
    if spec.type == INT:
        options.setdefault("step", 1)
        if is_seed(spec):
            options["control_after_generate"] = True
    elif spec.type == FLOAT:
        options.setdefault("step", 0.01)
        options.setdefault("round", False)
    elif spec.type == STRING:
        options["multiline"] = bool(spec.multiline)
        options.setdefault("default", "")
    return [spec.type, options]


def _input_files(input_dir: Path) -> list[str]:
    names: list[str] = []
    try:
        for path in sorted(input_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not any(
                    part.startswith(".") for part in path.relative_to(input_dir).parts):
                names.append(path.relative_to(input_dir).as_posix())
                if len(names) >= 5000:
                    break
    except OSError:
        pass
    return names


#: ComfyUI's model-name inputs and the models subfolders (folder_paths' names) their files come from:
#: offered as combo choices when the server has a models folder.
MODEL_INPUT_FOLDERS: dict[str, tuple[str, ...]] = {
    "ckpt_name": ("checkpoints",),
    "lora_name": ("loras",),
    "vae_name": ("vae",),
    "unet_name": ("unet", "diffusion_models"),
    "clip_name": ("clip", "text_encoders"),
    "clip_name1": ("clip", "text_encoders"),
    "clip_name2": ("clip", "text_encoders"),
}
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def _model_files(models_dir: Path, folders: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for folder in folders:
        root = models_dir / folder
        try:
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.suffix.lower() in MODEL_SUFFIXES and path.is_file() and not any(
                        part.startswith(".") for part in rel.parts):
                    names.append(rel.as_posix())
        except OSError:
            continue
    return sorted(set(names))


def _module_part(pack: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in pack)


def node_definition(spec: NodeSpec, input_dir: Path | None = None, models_dir: Path | None = None) -> dict[str, Any]:
    """One node type as `/api/object_info` describes it."""
    visible = editor_inputs(spec)
    required, optional = [i for i in visible if not i.optional], [i for i in visible if i.optional]
    sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}
    image_loader = spec.type_name in ("LoadImage", "LoadImageMask") and "image" in spec.inputs
    for section, inputs in (("required", required), ("optional", optional)):
        for item in inputs:
            if image_loader and item.name == "upload":
                continue  # the editor's upload button comes from `image_upload` below
            if image_loader and item.name == "image" and item.type == STRING and input_dir is not None:
                files = _input_files(input_dir)
                sections[section][item.name] = [files, {"image_upload": True,
                                                        **({"tooltip": item.description} if item.description else {})}]
                continue
            if (models_dir is not None and item.type == STRING and item.choices is None
                    and item.name in MODEL_INPUT_FOLDERS):  # a model name: the files the loader can open
                files = _model_files(models_dir, MODEL_INPUT_FOLDERS[item.name])
                sections[section][item.name] = [files, {"tooltip": item.description} if item.description else {}]
                continue
            sections[section][item.name] = input_definition(item)
    hidden = {i.name: i.type for i in spec.inputs.values() if i.hidden}
    input_section: dict[str, Any] = {"required": sections["required"]}
    if sections["optional"]:
        input_section["optional"] = sections["optional"]
    if hidden:
        input_section["hidden"] = hidden
    order: dict[str, list[str]] = {"required": list(sections["required"])}
    if sections["optional"]:
        order["optional"] = list(sections["optional"])
    return {
        "input": input_section,
        "input_order": order,
        "output": [o.type for o in spec.outputs],
        "output_is_list": [bool(spec.output_is_list[i]) if i < len(spec.output_is_list) else False
                           for i in range(len(spec.outputs))],
        "output_name": [o.name or o.type for o in spec.outputs],
        "output_tooltips": [o.description for o in spec.outputs],
        "name": spec.type_name,
        "display_name": spec.display_name or spec.type_name,
        "description": inspect.cleandoc(spec.description or ""),
        # the editor badges nodes by `custom_nodes.<pack>`: ours read "graphgen-kolors", "graphgen-lora"...
        "python_module": "custom_nodes.graphgen" + (f"-{_module_part(spec.pack)}" if spec.pack else ""),
        "category": spec.category or "misc",
        "output_node": bool(spec.output_node),
        "deprecated": False,
        "experimental": False,
    }


def object_info(specs: dict[str, NodeSpec], input_dir: Path | None = None,
                on_error: Callable[[str, Exception], None] | None = None,
                models_dir: Path | None = None) -> dict[str, Any]:
    """Every node type, by name. A node whose description fails is left out (and reported)."""
    out: dict[str, Any] = {}
    for name in sorted(specs):
        try:
            out[name] = node_definition(specs[name], input_dir, models_dir)
        except Exception as exc:  # one broken plugin node must not break the editor
            if on_error is not None:
                on_error(name, exc)
    return out
