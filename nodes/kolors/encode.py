"""Prompt encoding with ChatGLM3, exactly as diffusers' ``KolorsPipeline.encode_prompt``.

Kolors conditions its UNet on two tensors taken from one ChatGLM forward pass:

* ``embeds``: the **penultimate** layer's hidden states (``hidden_states[-2]``), which ChatGLM
  returns sequence-first, permuted to ``[B, 256, H]``;
* ``pooled``: the **last position** of the **last** layer's hidden states
  (``hidden_states[-1][-1]``), taken before ChatGLM's final layer norm, ``[B, H]``.

Prompts are tokenised with ``padding="max_length"``, ``max_length=256`` and truncation; the
ChatGLM tokenizer pads on the left, so the last position always holds the last real token.
An empty prompt is encoded like any other text (never zeroed), which is what the pipeline does
whenever a negative prompt is passed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch

__all__ = [
    "MAX_SEQUENCE_LENGTH",
    "Conditioning",
    "concat_conditioning",
    "encode_prompts",
    "repeat_conditioning",
]

logger = logging.getLogger(__name__)

#: Kolors' text length (prefix tokens included).
MAX_SEQUENCE_LENGTH = 256


@dataclass
class Conditioning:
    """Encoded prompts for the Kolors UNet.

    Attributes:
        embeds: Penultimate-layer hidden states, ``[B, 256, H]``.
        pooled: Last-layer hidden state at the last position, before the final norm, ``[B, H]``.
        prompts: The texts, one per batch row.
        truncated: Per row, whether the text was longer than 256 tokens and was cut.
        warnings: Human-readable warnings (one per truncated prompt).
    """

    embeds: torch.Tensor
    pooled: torch.Tensor
    prompts: list[str] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.embeds.ndim != 3 or self.pooled.ndim != 2:
            raise ValueError(
                f"Conditioning needs embeds [B, L, H] and pooled [B, H], got {tuple(self.embeds.shape)}"
                f" and {tuple(self.pooled.shape)}"
            )
        if self.embeds.shape[0] != self.pooled.shape[0]:
            raise ValueError(
                f"Conditioning batch sizes differ: embeds {self.embeds.shape[0]}, pooled {self.pooled.shape[0]}"
            )
        if not self.truncated:
            self.truncated = [False] * self.batch_size

    @property
    def batch_size(self) -> int:
        """Number of rows."""
        return int(self.embeds.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Conditioning:
        """Returns a copy with both tensors moved/cast (text fields are shared)."""
        return replace(
            self,
            embeds=self.embeds.to(device=device, dtype=dtype),
            pooled=self.pooled.to(device=device, dtype=dtype),
        )


def _token_lengths(tokenizer: Any, prompts: list[str]) -> list[int]:
    """Untruncated token counts, prefix tokens included."""
    ids = tokenizer(prompts, padding=False, truncation=False)["input_ids"]
    return [len(row) for row in ids]


@torch.no_grad()
def encode_prompts(
    text_encoder: Any,
    tokenizer: Any,
    prompts: list[str] | str,
    device: torch.device | str | None = None,
    *,
    max_length: int = MAX_SEQUENCE_LENGTH,
) -> Conditioning:
    """Encodes prompts with ChatGLM exactly as ``KolorsPipeline.encode_prompt``.

    Positive and negative prompts are encoded the same way: call this once for each. An empty
    string is encoded as text (the pipeline zeroes nothing when a negative prompt is given).

    Args:
        text_encoder: diffusers' Kolors ``ChatGLMModel`` (any dtype; the outputs keep it).
        tokenizer: ``ChatGLMTokenizer``.
        prompts: One text or a list of texts (Chinese works).
        device: Where to run the encoder; defaults to the encoder's device.
        max_length: Token length; Kolors uses 256 and the pipeline refuses more.

    Returns:
        The conditioning, on ``device``, with one row per prompt. Prompts longer than
        ``max_length`` tokens are cut (as the pipeline does) and flagged in ``truncated`` and
        ``warnings``.

    Raises:
        ValueError: If ``prompts`` is empty or ``max_length`` is out of range.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    if not 1 <= max_length <= MAX_SEQUENCE_LENGTH:
        raise ValueError(f"max_length must be in 1..{MAX_SEQUENCE_LENGTH}, got {max_length}")
    if device is None:
        device = next(text_encoder.parameters()).device

    lengths = _token_lengths(tokenizer, prompts)
    truncated = [n > max_length for n in lengths]
    warnings = [
        f"prompt {i} has {n} tokens; only the first {max_length} are used: {prompt[:40]!r}..."
        for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True))
        if n > max_length
    ]
    for message in warnings:
        logger.warning(message)

    inputs = tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    ).to(device)
    output = text_encoder(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        output_hidden_states=True,
    )
    # ChatGLM is sequence-first: [L, B, H] -> [B, L, H]; clone for a contiguous tensor.
    embeds = output.hidden_states[-2].permute(1, 0, 2).clone()
    # Last position of the last layer (before the final norm): [B, H].
    pooled = output.hidden_states[-1][-1, :, :].clone()
    return Conditioning(embeds=embeds, pooled=pooled, prompts=prompts, truncated=truncated, warnings=warnings)


def repeat_conditioning(cond: Conditioning, num_images_per_prompt: int) -> Conditioning:
    """Repeats each row ``num_images_per_prompt`` times, in the pipeline's order.

    Rows stay grouped per prompt (``[p0, p0, p1, p1]`` for 2 prompts × 2 images), as
    ``prompt_embeds.repeat(1, n, 1).view(B * n, L, -1)`` gives in ``KolorsPipeline``.

    Args:
        cond: The conditioning to repeat.
        num_images_per_prompt: Copies per row, at least 1.

    Returns:
        A new conditioning with ``B * num_images_per_prompt`` rows (or ``cond`` itself for 1).

    Raises:
        ValueError: If ``num_images_per_prompt`` < 1.
    """
    n = int(num_images_per_prompt)
    if n < 1:
        raise ValueError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
    if n == 1:
        return cond
    return Conditioning(
        embeds=cond.embeds.repeat_interleave(n, dim=0),
        pooled=cond.pooled.repeat_interleave(n, dim=0),
        prompts=[p for p in cond.prompts for _ in range(n)],
        truncated=[t for t in cond.truncated for _ in range(n)],
        warnings=list(cond.warnings),
    )


def concat_conditioning(conds: list[Conditioning]) -> Conditioning:
    """Stacks several conditionings into one batch (rows in the given order).

    Args:
        conds: Conditionings with the same sequence length and hidden size.

    Returns:
        One conditioning holding all rows.

    Raises:
        ValueError: If ``conds`` is empty or the shapes do not fit together.
    """
    if not conds:
        raise ValueError("concat_conditioning needs at least one conditioning")
    shapes = {tuple(c.embeds.shape[1:]) for c in conds}
    if len(shapes) != 1:
        raise ValueError(f"cannot concatenate conditionings of shapes {sorted(shapes)}")
    return Conditioning(
        embeds=torch.cat([c.embeds for c in conds], dim=0),
        pooled=torch.cat([c.pooled for c in conds], dim=0),
        prompts=[p for c in conds for p in c.prompts],
        truncated=[t for c in conds for t in c.truncated],
        warnings=[w for c in conds for w in c.warnings],
    )
