"""Original LDM/SGM UNet block names ↔ diffusers module paths, for any SD-shaped UNet.

An LDM UNet numbers its blocks flatly: ``input_blocks.K`` (one resnet, optionally followed by a
transformer, per layer; a downsampler after each level but the last), ``middle_block.0-2`` and
``output_blocks.K`` (one more layer per level than on the way down; the upsampler comes after the
transformer when there is one). diffusers names them by level. The rows built here map one onto
the other from the layout alone (levels, layers per level, which levels have attention), so the
same code serves SD1.5 (4 levels, attention on down levels 0-2), SDXL and Kolors (3 levels,
attention on levels 1-2) and the SDXL refiner (4 levels, attention on levels 1-2).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LDM_FIXED", "LDM_RESNET_LEAVES", "UnetLayout", "unet_block_rows"]

#: LDM names of the modules outside the input/middle/output blocks → diffusers paths.
LDM_FIXED: tuple[tuple[str, str], ...] = (
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("label_emb.0.0", "add_embedding.linear_1"),
    ("label_emb.0.2", "add_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("middle_block.0", "mid_block.resnets.0"),
    ("middle_block.1", "mid_block.attentions.0"),
    ("middle_block.2", "mid_block.resnets.1"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
)

#: ``(diffusers_suffix, ldm_suffix)`` inside resnet blocks; transformer blocks need none.
LDM_RESNET_LEAVES: tuple[tuple[str, str], ...] = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)


class UnetLayout:
    """The block layout of an SD-shaped UNet.

    Attributes:
        levels: Resolution levels (4 for SD1.5 and the SDXL refiner, 3 for SDXL and Kolors).
        layers: Resnets per down level (up levels have one more).
        down_attention: Down levels whose layers carry a transformer.
    """

    def __init__(self, levels: int, layers: int, down_attention: Iterable[int]) -> None:
        self.levels = levels
        self.layers = layers
        self.down_attention = tuple(sorted(down_attention))

    @property
    def up_attention(self) -> tuple[int, ...]:
        """Up levels with transformers (diffusers numbers up levels from the bottom)."""
        return tuple(sorted(self.levels - 1 - d for d in self.down_attention))


def unet_block_rows(layout: UnetLayout) -> tuple[tuple[str, str], ...]:
    """``(ldm_prefix, diffusers_prefix)`` rows, e.g. ``("input_blocks.4.1", "down_blocks.1.attentions.0")``."""
    rows = list(LDM_FIXED)
    per = layout.layers
    for level in range(layout.levels):
        for j in range(per):
            k = 1 + level * (per + 1) + j
            rows.append((f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}"))
            if level in layout.down_attention:
                rows.append((f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}"))
        if level < layout.levels - 1:
            k = (level + 1) * (per + 1)
            rows.append((f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv"))
    up_layers = per + 1
    for level in range(layout.levels):
        has_attention = level in layout.up_attention
        for j in range(up_layers):
            k = level * up_layers + j
            rows.append((f"output_blocks.{k}.0", f"up_blocks.{level}.resnets.{j}"))
            if has_attention:
                rows.append((f"output_blocks.{k}.1", f"up_blocks.{level}.attentions.{j}"))
        if level < layout.levels - 1:
            k = level * up_layers + up_layers - 1
            rows.append((f"output_blocks.{k}.{2 if has_attention else 1}", f"up_blocks.{level}.upsamplers.0"))
    return tuple(rows)
