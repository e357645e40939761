"""LoRA nodes: load a LoRA file in any supported format, and stack LoRAs on a Kolors UNet.

Strength semantics (see `apply.py`): each module adds `strength · alpha / rank · up @ down`, with
the alpha stored in the file (kohya `.alpha`, peft `lora_alpha`); files that store none (DiffSynth
`.ckpt`, diffusers `lora.up/down`) use alpha = rank, i.e. scale 1 at strength 1, as their own
loaders do. `lora_alpha` overrides the file's alpha: the tutorial's rank-16 `.ckpt` gives
0.25 ("as trained", `lora_alpha` 4), 0.125 (tutorial notebook / ComfyUI `LoadKolorsLoRA`,
`lora_alpha` 2) or 1.0 (DiffSynth `ModelManager`, `lora_alpha` 16 or strength 1 without override).
Applying never changes the base model: the LoRAs are active only while a sampler runs.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from graphgen import Float, Input, Node, Output, Result, String
from graphgen.checks import CheckContext, Problem, models_dir_hint
from graphgen.context import EngineSettings


def _lora_path(settings: EngineSettings | None, path: str) -> Path:
    from graphgen_nodes.kolors.handles import resolve_model_path

    return resolve_model_path(settings, path, "loras", what="LoRA file")


def lora_file_check(lora_path: str, ctx: CheckContext) -> Problem | None:
    """Validation: the LoRA file exists (as given, or under <models>/loras)."""
    if not lora_path:
        return Problem("no LoRA file is given", "give the path of a .safetensors or .ckpt LoRA")
    if not _lora_path(ctx.settings, lora_path).is_file():
        return Problem(f"LoRA file {lora_path!r} not found", models_dir_hint(ctx.settings) +
                       " (LoRAs are looked for in its loras/ folder)")
    return None


class LoadLoRA(Node):
    """Read a LoRA file: DiffSynth .ckpt, peft, diffusers, old attention-processor or kohya keys."""

    category = "lora"
    inputs = [String("lora_path", default="", description="LoRA file (relative paths also under models/loras)",
                     checks=(lora_file_check,)),
              Float("lora_alpha", default=0.0, min=0.0, max=1024.0, step=0.01,
                    description="override the file's alpha (0: use the file's; none stored = rank)")]
    outputs = [Output("LORA", "lora")]

    @classmethod
    def fingerprint(cls, lora_path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        from graphgen_nodes.kolors.handles import model_identity

        return model_identity(settings, lora_path, "loras", what="LoRA file")

    def run(self, lora_path: str, lora_alpha: float) -> Any:
        from .lora_file import read_lora

        path = _lora_path(self.ctx.settings, lora_path)
        if not path.is_file():
            where = f" or under {self.ctx.settings.models_dir / 'loras'}" if self.ctx.settings.models_dir else ""
            raise FileNotFoundError(f"LoRA file {lora_path!r} not found{where}; give the path of a "
                                    ".safetensors or .ckpt LoRA")
        lora = read_lora(path)
        return lora.with_alpha(lora_alpha) if lora_alpha else lora


def check_lora_fits(unet: Any, lora: Any) -> tuple[int, list[str]]:
    """How many of the LoRA's modules exist in the UNet, and which do not (raises if none)."""
    from .lora_file import LoraError

    names = {name for name, _ in unet.named_modules()}
    matched = [path for path in lora.modules if path in names]
    missing = [path for path in lora.modules if path not in names]
    if not matched:
        raise LoraError(f"{lora.source}: none of its {len(lora.modules)} modules exist in this UNet "
                        f"(e.g. {next(iter(lora.modules), '?')}); is it a LoRA for another model?")
    return len(matched), missing


class KolorsApplyLoRA(Node):
    """Stack a LoRA on a Kolors UNet with a strength; chain several to stack more."""

    category = "lora"
    inputs = [Input("model", "KOLORS_UNET", force_link=True), Input("lora", "LORA", force_link=True),
              Float("strength", default=1.0, min=-10.0, max=10.0, step=0.01)]
    outputs = [Output("KOLORS_UNET", "model")]

    def run(self, model: Any, lora: Any, strength: float) -> Result:
        matched, missing = check_lora_fits(model.handle.model, lora)
        unmatched = list(lora.unmatched) + missing
        clip = [k for k in unmatched if k.startswith(("lora_te", "te1", "te2", "text_encoder"))]
        if clip:
            self.ctx.warn(f"{len(clip)} text-encoder (CLIP) keys skipped: Kolors uses ChatGLM, so SDXL LoRAs' "
                          "text-encoder parts cannot apply")
        other = [k for k in unmatched if k not in clip]
        if other:
            self.ctx.warn(f"{len(other)} LoRA keys match no UNet module, e.g. {', '.join(other[:3])}")
        return Result(model.with_lora(lora, strength),
                      ui={"lora": [f"{Path(lora.source).name}: {matched} modules at strength {strength:g}"
                                   + (f", {len(unmatched)} keys unmatched" if unmatched else "")]})


class KolorsLoraLoader(Node):
    """Load a LoRA file and stack it on a Kolors UNet in one step."""

    category = "lora"
    inputs = [Input("model", "KOLORS_UNET", force_link=True),
              String("lora_path", default="", description="LoRA file (relative paths also under models/loras)",
                     checks=(lora_file_check,)),
              Float("strength", default=1.0, min=-10.0, max=10.0, step=0.01),
              Float("lora_alpha", default=0.0, min=0.0, max=1024.0, step=0.01,
                    description="override the file's alpha (0: use the file's)")]
    outputs = [Output("KOLORS_UNET", "model")]

    @classmethod
    def fingerprint(cls, lora_path: str, settings: EngineSettings | None = None, **_: Any) -> Hashable:
        return LoadLoRA.fingerprint(lora_path=lora_path, settings=settings)

    def run(self, model: Any, lora_path: str, strength: float, lora_alpha: float) -> Result:
        loader = LoadLoRA()
        loader.ctx = self.ctx
        applier = KolorsApplyLoRA()
        applier.ctx = self.ctx
        return applier.run(model, loader.run(lora_path, lora_alpha), strength)


NODES = [LoadLoRA, KolorsApplyLoRA, KolorsLoraLoader]
