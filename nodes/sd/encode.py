"""CLIP text encoding for SD1.5, SDXL and the SDXL refiner, into ComfyUI's CONDITIONING shape.

CONDITIONING is a list of ``[embeds [1, T, C], {"pooled_output": [1, P], ...}]`` entries
(ComfyUI's shape, so custom nodes that edit conditioning keep working). What goes in follows
diffusers' ``encode_prompt`` of each pipeline, so the graph equals the pipeline:

* SD1.5: the last layer after the final layer norm (ComfyUI's default); ``CLIPSetLastLayer(-n)``
  takes layer −n, still through the final norm (diffusers' ``clip_skip = n − 1``).
* SDXL: the penultimate hidden states of ViT-L and bigG, concatenated, without the final norm,
  and bigG's projected pooled output; ``CLIPSetLastLayer`` moves both layers.
* Refiner: bigG alone, the same way.

Prompts longer than 75 tokens are encoded in 75-token chunks (each with its start/end tokens)
and concatenated, as ComfyUI does; the pooled output is the first chunk's. Shorter prompts are
one 77-token chunk, padded as each tokenizer pads (ViT-L with the end token, bigG with ``!``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import torch

__all__ = ["encode_first_chunks", "encode_text"]

_CHUNK = 75


def _chunks(tokenizer: Any, text: str) -> list[torch.Tensor]:
    """Token ids in 77-token rows: start, up to 75 prompt tokens, end, padding."""
    ids = tokenizer(text, add_special_tokens=False, truncation=False).input_ids
    pieces = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]
    rows = []
    for piece in pieces:
        row = [tokenizer.bos_token_id, *piece, tokenizer.eos_token_id]
        row += [tokenizer.pad_token_id] * (_CHUNK + 2 - len(row))
        rows.append(torch.tensor([row]))
    return rows


def _run(encoder: Any, ids: torch.Tensor, layer: int, final_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states of ``layer`` (−1 = last) and the encoder's pooled (or projected) output."""
    param = next(encoder.parameters())
    out = encoder(ids.to(param.device), output_hidden_states=True)
    pooled = out[0] if out[0].ndim == 2 else out.pooler_output  # WithProjection: text_embeds first
    if layer == -1 and final_norm:
        hidden = out.last_hidden_state
    else:
        hidden = out.hidden_states[layer]
        if final_norm:
            norm = getattr(encoder, "final_layer_norm", None) or encoder.text_model.final_layer_norm
            hidden = norm(hidden)
    return hidden.to(torch.float32), pooled.to(torch.float32)


def _rules(family: str, last_layer: int | None) -> list[tuple[str, str | None, int, bool]]:
    """The encoders of a family in concatenation order: ``(name, pad token, layer, final norm)``.

    The last one gives the pooled output (SD1.5: ViT-L's; SDXL and the refiner: bigG's).
    """
    if family == "sd15":
        return [("clip_l", None, -1 if last_layer is None else last_layer, True)]
    layer = -2 if last_layer is None else last_layer - 1
    big_g = ("clip_g", "!", layer, False)
    return [big_g] if family == "sdxl_refiner" else [("clip_l", None, layer, False), big_g]


def _tokenizer(pad: str | None) -> Any:
    from graphgen_nodes.diffusion.clip_tokenizer import clip_tokenizer

    return clip_tokenizer() if pad is None else clip_tokenizer(pad_token=pad)


def _encode_one(handle: Any, tokenizer: Any, text: str, layer: int, final_norm: bool,
                loras: list[tuple[Any, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    from graphgen_nodes.lora.apply import applied_loras

    with ExitStack() as stack:
        encoder = stack.enter_context(handle.use())
        if loras:
            stack.enter_context(applied_loras(encoder, loras))
        parts = [_run(encoder, ids, layer, final_norm) for ids in _chunks(tokenizer, text)]
    return torch.cat([h for h, _ in parts], dim=1), parts[0][1]


@torch.no_grad()
def encode_text(clip: Any, text: str) -> list[list[Any]]:
    """Encodes one prompt with an ``SDClip``; returns a one-entry CONDITIONING."""
    hidden, pooled = [], None
    for name, pad, layer, final_norm in _rules(clip.family, clip.last_layer):
        loras = [(lora, strength) for encoder, lora, strength in clip.loras if encoder == name]
        embeds, pooled = _encode_one(getattr(clip, name), _tokenizer(pad), text, layer, final_norm, loras)
        hidden.append(embeds)
    return [[torch.cat(hidden, dim=-1), {"pooled_output": pooled}]]


def encode_first_chunks(family: str, last_layer: int | None, encoders: Mapping[str, torch.nn.Module],
                        texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`encode_text` gives for each text's first 77-token chunk, batched, with gradients.

    Training encodes one chunk per caption (start, 75 tokens, end), as kohya's default
    ``max_token_length``: longer captions are cut.

    For training the text encoders: ``encoders`` are modules already on their device (e.g. the
    LoRA-carrying training copies), keyed ``clip_l``/``clip_g`` as in an ``SDClip``; the same
    layers, final-norm rule and pooled output as :func:`encode_text`.

    Returns:
        ``(embeds [N, 77, C], pooled [N, P])`` in fp32.
    """
    hidden, pooled = [], None
    for name, pad, layer, final_norm in _rules(family, last_layer):
        tokenizer = _tokenizer(pad)
        ids = torch.cat([_chunks(tokenizer, text)[0] for text in texts])
        embeds, pooled = _run(encoders[name], ids, layer, final_norm)
        hidden.append(embeds)
    assert pooled is not None
    return torch.cat(hidden, dim=-1), pooled
