"""Text-encoder LoRA while training (kohya's ``--text_encoder_lr``): captions encoded every step.

With ``text_encoder_lr > 0`` the trainer puts LoRA on every Linear of each CLIP encoder's
attention and MLP (kohya's ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``, ``fc1``, ``fc2``;
not the pooled projection), on weight-sharing copies made by :class:`~.train_adapter.TrainableLora`,
and encodes each batch's caption strings through those copies with gradients. The UNet's latents
stay cached (the VAE stays off the device); the text encoders stay on it for the whole run.
Gradient checkpointing applies to the UNet only: a CLIP's activations for 77 tokens are small.

The trainer is family-agnostic: the node hands it a :class:`TextEncoders` (the base encoders on
the training device, the kohya key prefix of each, and the family's encode function, the same
conditioning its text-encode node gives) and the trainer wraps it in a :class:`TrainableText`.
Each encoder's ``lora_A`` init comes from its own seeded generator, so the UNet LoRA's init (and
with ``text_encoder_lr = 0``, the whole run) is what it was without text-encoder training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .train_adapter import TrainableLora
from .train_config import TrainError

__all__ = ["TEXT_ENCODER_MODULES", "EncodeFn", "TextEncoders", "TrainableText"]

#: kohya's text-encoder LoRA targets (``networks.lora``: every Linear of CLIPAttention and CLIPMLP).
TEXT_ENCODER_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

#: ``(encoders by name, captions) -> (prompt_embeds [N, L, D], pooled [N, P])``, differentiable.
EncodeFn = Callable[[Mapping[str, torch.nn.Module], list[str]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TextEncoders:
    """A family's text encoders as the trainer receives them.

    Attributes:
        modules: Encoder name (``clip_l``, ``clip_g``) → the base encoder, on the training device.
        prefixes: Encoder name → kohya key prefix of its LoRA in the file (``lora_te1_``...).
        encode: The family's conditioning of a batch of captions through given encoders.
    """

    modules: Mapping[str, torch.nn.Module]
    prefixes: Mapping[str, str]
    encode: EncodeFn


class TrainableText:
    """LoRA on each of a family's text encoders; encodes captions through the LoRA-carrying copies."""

    def __init__(self, encoders: TextEncoders, rank: int, alpha: float,
                 init_generator: Callable[[str], torch.Generator], dropout: float = 0.0) -> None:
        """Builds one :class:`TrainableLora` per encoder.

        Args:
            encoders: The base encoders (left untouched apart from ``requires_grad`` flags).
            rank: LoRA rank (kohya: the same ``network_dim`` as the UNet's).
            alpha: LoRA alpha.
            init_generator: ``name -> generator`` of that encoder's ``lora_A`` init.
            dropout: Network dropout on the LoRA path.
        """
        self.encoders = encoders
        self.loras = {
            name: TrainableLora(module, rank, alpha, TEXT_ENCODER_MODULES, init_generator(name), dropout=dropout,
                                what=f"text encoder {name}")
            for name, module in sorted(encoders.modules.items())
        }

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable tensors of every encoder (name order, then path order)."""
        return [p for lora in self.loras.values() for p in lora.parameters()]

    def train(self, mode: bool = True) -> None:
        """Sets the copies' training mode (network dropout is active in training mode only)."""
        for lora in self.loras.values():
            lora.model.train(mode)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditioning of ``captions`` through the LoRA-carrying encoders (with gradients)."""
        return self.encoders.encode({name: lora.model for name, lora in self.loras.items()}, captions)

    def state(self) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """``{encoder name: {path: (A, B)}}``, fp32 CPU copies (for checkpoints)."""
        return {name: lora.state() for name, lora in self.loras.items()}

    def load_state(self, state: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Copies a :meth:`state` back.

        Raises:
            TrainError: The checkpoint has other encoders or modules.
        """
        if set(state) != set(self.loras):
            raise TrainError(f"the checkpoint's text-encoder LoRAs ({', '.join(sorted(state)) or 'none'}) do not "
                             f"match this CLIP's ({', '.join(self.loras)}): delete it or set resume=False")
        for name, lora in self.loras.items():
            lora.load_state(state[name])

    def file_state(self) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """``{kohya prefix: {path: (A, B)}}``, what the LoRA file stores."""
        return {self.encoders.prefixes[name]: lora.state() for name, lora in self.loras.items()}
