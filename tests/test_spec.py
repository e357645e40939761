"""Input specs: constant checking, type compatibility, node declaration, classic adapter."""

from __future__ import annotations

import math

import pytest

from graphgen import Choice, Float, Int, Node, Output, Result, String
from graphgen.comfy_classic import classic_spec
from graphgen.spec import ConstantError, InputSpec, coerce_constant, types_compatible


def test_coerce_numbers_and_bounds():
    spec = Int("n", min=0, max=10)
    assert coerce_constant(spec, 3.0) == 3 and isinstance(coerce_constant(spec, 3.0), int)
    for value, code in [(11, "value_bigger_than_max"), (-1, "value_smaller_than_min"), (True, "invalid_constant_type"),
                        ("3", "invalid_constant_type"), (2.5, "invalid_constant_type")]:
        with pytest.raises(ConstantError) as info:
            coerce_constant(spec, value)
        assert info.value.code == code
    assert coerce_constant(Float("f"), 2) == 2.0
    with pytest.raises(ConstantError):
        coerce_constant(Float("f"), math.inf)


def test_choices_static_and_dynamic():
    spec = Choice("c", ["euler", "ddim"])
    assert spec.default == "euler"
    with pytest.raises(ConstantError) as info:
        coerce_constant(spec, "eular")
    assert "did you mean 'euler'" in info.value.hint
    files = ["a.safetensors"]
    dynamic = InputSpec("m", "COMBO", choices=lambda: files, choices_hint="files in models/loras")
    with pytest.raises(ConstantError) as info:
        coerce_constant(dynamic, "b.safetensors")
    assert "models/loras" in info.value.hint
    files.append("b.safetensors")
    assert coerce_constant(dynamic, "b.safetensors") == "b.safetensors"
    assert coerce_constant(Choice("x", [1, 2]), 1) == 1
    with pytest.raises(ConstantError):
        coerce_constant(Choice("x", [1, 2]), True)


def test_types_compatible():
    assert types_compatible("LATENT", "LATENT") and types_compatible("*", "MODEL") and types_compatible("IMAGE", "*")
    assert types_compatible("IMAGE", "IMAGE,MASK") and not types_compatible("LATENT", "IMAGE")
    assert types_compatible("STRING", "COMBO")


def test_node_spec_from_class():
    class Example(Node):
        """Does things."""

        category = "x"
        version = 3
        inputs = [String("text", multiline=True, description="what to say"), Int("n", default=1, optional=True)]
        outputs = [Output("STRING", "text"), Output("INT")]

        def run(self, text, n=1):
            return Result(text * n, n, ui={"text": [text]})

    spec = Example.spec()
    info = spec.describe()
    assert info["description"] == "Does things." and info["version"] == "3"
    assert info["inputs"][0] == {"name": "text", "type": "STRING", "optional": False, "multiline": True,
                                 "description": "what to say"}
    assert [o.name for o in spec.outputs] == ["text", "int"]
    assert spec.output_index("int") == 1 and spec.output_index(2) is None and spec.output_index(True) is None

    class Dup(Node):
        inputs = [Int("a"), Int("a")]

    with pytest.raises(TypeError, match="twice"):
        Dup.spec()


def test_wrong_number_of_returns_is_an_error():
    class Bad(Node):
        outputs = [Output("INT"), Output("INT")]

        def run(self):
            return 1

    with pytest.raises(TypeError, match="returned 1 values but declares 2"):
        Bad.spec().execute(None, {})


def test_classic_spec_reads_comfyui_declarations():
    class Classic:
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**64 - 1}),
                                 "sampler": (["euler", "ddim"], {"default": "ddim"}),
                                 "model": ("MODEL",), "text": ("STRING", {"multiline": True, "tooltip": "prompt"})},
                    "optional": {"mask": ("MASK",)}, "hidden": {"uid": "UNIQUE_ID"}}

        RETURN_TYPES = ("LATENT",)
        RETURN_NAMES = ("samples",)
        FUNCTION = "go"
        CATEGORY = "sampling"
        DESCRIPTION = "Samples."

        def go(self, **kw):
            return (kw,)

    spec = classic_spec("Classic", Classic)
    assert spec.inputs["seed"].max == 2**64 - 1
    assert spec.inputs["sampler"].choices == ["euler", "ddim"] and spec.inputs["sampler"].default == "ddim"
    assert spec.inputs["mask"].optional and spec.inputs["uid"].hidden
    assert spec.inputs["text"].description == "prompt" and spec.inputs["text"].multiline
    assert spec.outputs[0].name == "samples" and spec.description == "Samples."


def test_infinite_and_nan_are_constant_errors():
    """JSON readers accept Infinity/NaN: they must be validation errors, not crashes."""
    for value in (math.inf, -math.inf, math.nan):
        with pytest.raises(ConstantError):
            coerce_constant(Int("n"), value)
