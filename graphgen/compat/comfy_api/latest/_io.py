"""`comfy_api.latest.io`: ComfyUI's schema node API (`io.ComfyNode`, `io.Schema`, `io.Int.Input`...).

A schema node declares itself with `define_schema()` and runs in the classmethod `execute(...)`,
returning `io.NodeOutput(*values, ui=..., expand=...)`. graphgen turns such classes into node specs
(`graphgen.comfy_schema`); this module only holds the declarations, with ComfyUI's names.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from graphgen.compat.comfy.comfy_types.node_typing import IO


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"


class FolderType(str, enum.Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class Hidden(str, enum.Enum):
    """Values the engine supplies: `io.Hidden.unique_id`, `io.Hidden.prompt`..."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


# Keyword arguments of `X.Input(...)` -> the option names of ComfyUI's classic INPUT_TYPES.
_OPTION_NAMES = {"default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
                 "tooltip": "tooltip", "lazy": "lazy", "force_input": "forceInput", "multiline": "multiline",
                 "placeholder": "placeholder", "label_on": "label_on", "label_off": "label_off",
                 "display_mode": "display", "control_after_generate": "control_after_generate",
                 "dynamic_prompts": "dynamicPrompts", "raw_link": "rawLink", "socketless": "socketless",
                 "upload": "upload", "image_folder": "image_folder", "display_name": "display_name"}


class Input:
    """One input of a schema node. `io_type` comes from the type it belongs to (`io.Int.Input`)."""

    io_type: ClassVar[str] = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict[str, Any] | None = None,
                 **options: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = dict(extra_dict or {})
        self.options = options

    def get_io_type(self) -> Any:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        """The classic options dict (`{"default": 1, "min": 0, "lazy": True, ...}`)."""
        given = {"display_name": self.display_name, "tooltip": self.tooltip, "lazy": self.lazy, **self.options}
        out: dict[str, Any] = {}
        for key, value in given.items():
            if value is None:
                continue
            if isinstance(value, enum.Enum):
                value = value.value
            out[_OPTION_NAMES.get(key, key)] = value
        out.update(self.extra_dict)
        return out

    def classic(self) -> tuple[Any, ...]:
        """`(TYPE, options)` as a classic INPUT_TYPES entry."""
        return (self.get_io_type(), self.as_dict())


class Output:
    """One output of a schema node."""

    io_type: ClassVar[str] = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False, **_: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def get_io_type(self) -> Any:
        return self.io_type

    @property
    def name(self) -> str:
        return self.display_name or self.id or str(self.io_type)


class ComfyType:
    """A socket type: `Type.Input(...)` and `Type.Output(...)` declare inputs and outputs of it."""

    io_type: ClassVar[str] = "*"
    Input: ClassVar[type[Input]] = Input
    Output: ClassVar[type[Output]] = Output


def _socket(io_type: str, name: str) -> type[ComfyType]:
    """A type class whose nested `Input`/`Output` carry `io_type`."""
    input_class = type("Input", (Input,), {"io_type": io_type, "__qualname__": f"{name}.Input"})
    output_class = type("Output", (Output,), {"io_type": io_type, "__qualname__": f"{name}.Output"})
    return type(name, (ComfyType,), {"io_type": io_type, "Input": input_class, "Output": output_class})


def Custom(io_type: str) -> type[ComfyType]:  # noqa: N802 - ComfyUI's name
    """A type of the pack's own: `io.Custom("MY_TYPE").Input("x")`."""
    return _socket(str(io_type), f"Custom_{io_type}")


class _ComboInput(Input):
    io_type: ClassVar[str] = "COMBO"

    def __init__(self, id: str, options: list[Any] | type[enum.Enum] | None = None, **kwargs: Any) -> None:
        super().__init__(id, **kwargs)
        if isinstance(options, type) and issubclass(options, enum.Enum):
            options = [member.value for member in options]
        self.choices = list(options or [])
        if isinstance(self.options.get("default"), enum.Enum):
            self.options["default"] = self.options["default"].value

    def classic(self) -> tuple[Any, ...]:
        return (list(self.choices), self.as_dict())


class _MultiComboInput(_ComboInput):
    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "multiselect": True}


Int = _socket(IO.INT.value, "Int")
Float = _socket(IO.FLOAT.value, "Float")
String = _socket(IO.STRING.value, "String")
Boolean = _socket(IO.BOOLEAN.value, "Boolean")
Combo = type("Combo", (ComfyType,), {"io_type": "COMBO", "Input": _ComboInput,
                                     "Output": type("Output", (Output,), {"io_type": "COMBO"})})
MultiCombo = type("MultiCombo", (ComfyType,), {"io_type": "COMBO", "Input": _MultiComboInput,
                                               "Output": type("Output", (Output,), {"io_type": "COMBO"})})
AnyType = _socket("*", "AnyType")
Image = _socket("IMAGE", "Image")
Mask = _socket("MASK", "Mask")
Latent = _socket("LATENT", "Latent")
Conditioning = _socket("CONDITIONING", "Conditioning")
Model = _socket("MODEL", "Model")
Clip = _socket("CLIP", "Clip")
Vae = _socket("VAE", "Vae")
ClipVision = _socket("CLIP_VISION", "ClipVision")
ClipVisionOutput = _socket("CLIP_VISION_OUTPUT", "ClipVisionOutput")
ControlNet = _socket("CONTROL_NET", "ControlNet")
Sampler = _socket("SAMPLER", "Sampler")
Sigmas = _socket("SIGMAS", "Sigmas")
Noise = _socket("NOISE", "Noise")
Guider = _socket("GUIDER", "Guider")
UpscaleModel = _socket("UPSCALE_MODEL", "UpscaleModel")
Audio = _socket("AUDIO", "Audio")
Video = _socket("VIDEO", "Video")
Webcam = _socket("WEBCAM", "Webcam")


class Schema:
    """What `define_schema()` returns: the node's id, inputs, outputs and flags."""

    def __init__(self, node_id: str, display_name: str | None = None, category: str = "sd",
                 inputs: list[Input] | None = None, outputs: list[Output] | None = None,
                 hidden: list[Hidden] | None = None, description: str = "", is_input_list: bool = False,
                 is_output_node: bool = False, is_deprecated: bool = False, is_experimental: bool = False,
                 is_api_node: bool = False, not_idempotent: bool = False, enable_expand: bool = False,
                 **_: Any) -> None:
        self.node_id = node_id
        self.display_name = display_name
        self.category = category
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.hidden = list(hidden or [])
        self.description = description
        self.is_input_list = is_input_list
        self.is_output_node = is_output_node
        self.is_deprecated = is_deprecated
        self.is_experimental = is_experimental
        self.is_api_node = is_api_node
        self.not_idempotent = not_idempotent
        self.enable_expand = enable_expand

    def validate(self) -> None:
        """Refuse schemas graphgen cannot run: duplicate input or output ids."""
        ids = [i.id for i in self.inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"schema {self.node_id!r} declares input(s) {', '.join(duplicates)} twice")


class HiddenHolder:
    """`cls.hidden` while a schema node runs: `cls.hidden.unique_id`, `cls.hidden.prompt`..."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        values = values or {}
        for member in Hidden:
            setattr(self, member.name, values.get(member.name))


class NodeOutput:
    """What `execute` returns: output values, plus optional UI data, an expansion, or a block."""

    def __init__(self, *args: Any, ui: Any = None, expand: Any = None, block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None


class ComfyNode:
    """Base class of schema nodes: override `define_schema` and `execute` (classmethods)."""

    hidden: ClassVar[HiddenHolder] = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must override define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} must override execute()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - ComfyUI's name
        schema = cls.define_schema()
        schema.validate()
        return schema


class ComfyNodeV3(ComfyNode):
    """Older name of `ComfyNode`."""
