"""`comfy.comfy_types.node_typing`: the type names and base class ComfyUI packs annotate nodes with."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any, Literal, TypedDict


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return str(self.value)


class IO(StrEnum):
    """Socket type names. Comparing with `!=` follows ComfyUI: `*` matches anything, and comma
    lists match when one is a subset of the other (`IO.NUMBER != "INT"` is False)."""

    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __ne__(self, value: object) -> bool:
        if self.value == "*" or value == "*":
            return False
        if not isinstance(value, str):
            return True
        mine, theirs = set(self.value.split(",")), set(value.split(","))
        return not (mine <= theirs or theirs <= mine)

    def __eq__(self, value: object) -> bool:
        return str.__eq__(self, value)

    __hash__ = str.__hash__


class InputTypeOptions(TypedDict, total=False):
    """Options of one input (`(IO.INT, {"default": 1, "min": 0})`)."""

    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    display: str
    multiline: bool
    placeholder: str
    image_upload: bool
    label_on: str
    label_off: str


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    """What `INPUT_TYPES()` returns."""

    required: dict[str, tuple[Any, ...]]
    optional: dict[str, tuple[Any, ...]]
    hidden: HiddenInputTypeDict


class ComfyNodeABC(ABC):
    """Base class some packs derive classic nodes from: only declares what a node class has."""

    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool = False
    DEPRECATED: bool = False

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:  # noqa: N802 - ComfyUI's name
        """The node's inputs."""


class CheckLazyMixin:
    """A `check_lazy_status` that asks for every lazy input still unevaluated (None)."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


class FileLocator(TypedDict):
    """Where a saved file is, as UI results give it."""

    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]
