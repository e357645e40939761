"""Conditioning utilities (ComfyUI's names) as pure operations on ComfyUI's CONDITIONING shape.

CONDITIONING is a list of entries `[cond, extras]`: `cond` a tensor `[B, tokens, width]`,
`extras` a dict such as `{"pooled_output": tensor, ...}`. Several entries are several prompts a
sampler applies together (it combines their predictions). Keys set here are ComfyUI's, so custom
nodes that read or edit conditioning see what they expect: `start_percent` / `end_percent` (the
part of the sampling schedule an entry applies to, 0.0 = the first, noisiest step, 1.0 = the
end). Entries are copied, never modified in place: other branches of a graph may share them.
"""

from __future__ import annotations

from typing import Any

from graphgen import Float, Input, Node, Output

Conditioning = list[list[Any]]


def set_values(conditioning: Conditioning, values: dict[str, Any]) -> Conditioning:
    """Each entry with `values` added to a copy of its extras."""
    return [[entry[0], {**entry[1], **values}] for entry in conditioning]


def concat(to: Conditioning, source: Conditioning) -> tuple[Conditioning, str | None]:
    """Append the first entry of `source`'s tokens to every entry of `to` (extras of `to` kept).

    Returns the result and a warning when `source` has more than one entry (only the first is used).
    """
    import torch

    if not source:
        raise ValueError("conditioning_from is empty; connect it to a text encoder's output")
    tokens = source[0][0]
    out = []
    for cond, extras in to:
        if cond.shape[0] != tokens.shape[0] and tokens.shape[0] != 1 and cond.shape[0] != 1:
            raise ValueError(f"cannot concatenate conditioning batches of {cond.shape[0]} and {tokens.shape[0]} prompts; "
                             "use one prompt on either side")
        if cond.shape[-1] != tokens.shape[-1]:
            raise ValueError(f"cannot concatenate conditioning of width {cond.shape[-1]} with width {tokens.shape[-1]}: "
                             "both must come from the same text encoder")
        rows = max(cond.shape[0], tokens.shape[0])
        out.append([torch.cat((cond.expand(rows, -1, -1), tokens.to(cond).expand(rows, -1, -1)), dim=1), dict(extras)])
    warning = None
    if len(source) > 1:
        warning = (f"conditioning_from has {len(source)} entries; only the first is concatenated "
                   "(combine them after concatenating instead)")
    return out, warning


def zero_out(conditioning: Conditioning) -> Conditioning:
    """Every entry's tokens and pooled output replaced by zeros of the same shape."""
    import torch

    out = []
    for cond, extras in conditioning:
        extras = dict(extras)
        if extras.get("pooled_output") is not None:
            extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
        out.append([torch.zeros_like(cond), extras])
    return out


class ConditioningCombine(Node):
    """Use two conditionings together: the sampler combines the predictions of all their entries."""

    display_name = "Conditioning (Combine)"
    category = "conditioning"
    inputs = [Input("conditioning_1", "CONDITIONING", force_link=True),
              Input("conditioning_2", "CONDITIONING", force_link=True)]
    outputs = [Output("CONDITIONING", "conditioning")]

    def run(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> Conditioning:
        return list(conditioning_1) + list(conditioning_2)


class ConditioningConcat(Node):
    """Append `conditioning_from`'s tokens to each entry of `conditioning_to` (one longer prompt)."""

    display_name = "Conditioning (Concat)"
    category = "conditioning"
    inputs = [Input("conditioning_to", "CONDITIONING", force_link=True),
              Input("conditioning_from", "CONDITIONING", force_link=True)]
    outputs = [Output("CONDITIONING", "conditioning")]

    def run(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> Conditioning:
        out, warning = concat(conditioning_to, conditioning_from)
        if warning:
            self.ctx.warn(warning)
        return out


class ConditioningSetTimestepRange(Node):
    """Apply a conditioning only between `start` and `end` of the sampling schedule (fractions 0..1)."""

    display_name = "ConditioningSetTimestepRange"
    category = "advanced/conditioning"
    inputs = [Input("conditioning", "CONDITIONING", force_link=True),
              Float("start", default=0.0, min=0.0, max=1.0, step=0.001),
              Float("end", default=1.0, min=0.0, max=1.0, step=0.001)]
    outputs = [Output("CONDITIONING", "conditioning")]

    def run(self, conditioning: Conditioning, start: float, end: float) -> Conditioning:
        if start > end:
            self.ctx.warn(f"start {start} is after end {end}: this conditioning never applies; "
                          "swap them to apply it between the two")
        return set_values(conditioning, {"start_percent": start, "end_percent": end})


class ConditioningZeroOut(Node):
    """Conditioning of zeros (tokens and pooled output), e.g. an empty negative prompt for SDXL refiners."""

    display_name = "ConditioningZeroOut"
    category = "advanced/conditioning"
    inputs = [Input("conditioning", "CONDITIONING", force_link=True)]
    outputs = [Output("CONDITIONING", "conditioning")]

    def run(self, conditioning: Conditioning) -> Conditioning:
        return zero_out(conditioning)


NODES = [ConditioningCombine, ConditioningConcat, ConditioningSetTimestepRange, ConditioningZeroOut]
