"""The trainable LoRA: peft LoRA layers on a weight-sharing copy of a base model (UNet or text encoder).

The base model object may be shared by other graph nodes, so it is never wrapped or changed:
``copy.deepcopy`` with every parameter and buffer pre-seeded in the memo copies only the module
tree (no tensor memory), peft's ``inject_adapter_in_model`` wraps the copy's Linear layers, and
the copy is dropped after training. (peft's injection does flip ``requires_grad`` of the shared
weights; the trainer saves and restores those flags.)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from .train_config import TrainError

__all__ = ["ADAPTER_NAME", "TrainableLora"]

#: peft adapter name used on the training copy.
ADAPTER_NAME = "graphgen_train"


class TrainableLora:
    """fp32 peft LoRA layers on a structural copy of a model (a UNet, a CLIP text encoder) that shares its weights.

    Attributes:
        model: The copy carrying the LoRA layers (call it like the base model).
        layers: Module path (the model's own naming) → peft ``LoraLayer``, sorted by path.
    """

    def __init__(
        self,
        base: torch.nn.Module,
        rank: int,
        alpha: float,
        target_modules: list[str],
        init_generator: torch.Generator,
        dropout: float = 0.0,
        what: str = "UNet",
    ) -> None:
        """Builds the copy and initialises the LoRA as peft does, from ``init_generator``.

        ``lora_A`` gets peft's Kaiming-uniform init (``a = sqrt(5)``), ``lora_B`` zeros, so the
        copy starts out computing exactly what the base model computes.

        Args:
            base: The base model (left untouched apart from ``requires_grad`` flags).
            rank: LoRA rank.
            alpha: LoRA alpha (scale alpha / rank).
            target_modules: peft target module names.
            init_generator: CPU generator for ``lora_A`` (in path order).
            dropout: peft ``lora_dropout`` (on the LoRA path's input; active in ``train()`` mode).
            what: The model's name in messages (``"UNet"``, ``"text encoder clip_l"``).

        Raises:
            TrainError: If the model already carries peft layers, or has no target module.
        """
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer
        from peft.tuners.tuners_utils import BaseTunerLayer

        if any(isinstance(m, BaseTunerLayer) for m in base.modules()):
            raise TrainError(
                f"the {what} already carries peft adapters (a loaded LoRA): train on the plain base {what}"
            )
        shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
        self.model: torch.nn.Module = copy.deepcopy(base, shared)
        # Linear layers only (SD1.5's proj_in/proj_out are 1x1 convolutions, which kohya's plain
        # LoRA leaves out too), named in full so peft wraps exactly these.
        names = [name for name, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)
                 and any(name == t or name.endswith("." + t) for t in target_modules)]
        if not names:
            raise TrainError(f"no {'/'.join(target_modules)} layers found: is this a {what} of the chosen family?")
        config = LoraConfig(
            r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=dropout, init_lora_weights=True
        )
        inject_adapter_in_model(config, self.model, adapter_name=ADAPTER_NAME)
        found = {name: m for name, m in self.model.named_modules() if isinstance(m, LoraLayer)}
        if not found:
            raise TrainError(f"no {'/'.join(target_modules)} layers found: is this a {what} of the chosen family?")
        self.layers: dict[str, Any] = dict(sorted(found.items()))
        with torch.no_grad():
            for layer in self.layers.values():
                layer.lora_A[ADAPTER_NAME].to(torch.float32)
                layer.lora_B[ADAPTER_NAME].to(torch.float32)
                a = layer.lora_A[ADAPTER_NAME].weight
                init = torch.empty(a.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(init, a=math.sqrt(5), generator=init_generator)
                a.copy_(init)
                layer.lora_B[ADAPTER_NAME].weight.zero_()

    def _pair(self, name: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
        layer = self.layers[name]
        return layer.lora_A[ADAPTER_NAME].weight, layer.lora_B[ADAPTER_NAME].weight

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable tensors (``A, B`` per module, path order), with ``requires_grad`` set."""
        params = [p for name in self.layers for p in self._pair(name)]
        for p in params:
            p.requires_grad_(True)
        return params

    def state(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{path: (A [rank, in], B [out, rank])}``, fp32 CPU copies."""
        out = {}
        for name in self.layers:
            a, b = self._pair(name)
            out[name] = (a.detach().float().cpu().clone(), b.detach().float().cpu().clone())
        return out

    def load_state(self, state: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Copies saved factors (from :meth:`state`) into the layers.

        Args:
            state: ``{path: (A, B)}`` covering exactly this model's LoRA modules.

        Raises:
            TrainError: If the module sets differ.
        """
        if set(state) != set(self.layers):
            raise TrainError(
                "the checkpoint's LoRA modules do not match this model: delete it or set resume=False"
            )
        with torch.no_grad():
            for name, (a, b) in state.items():
                pa, pb = self._pair(name)
                pa.copy_(a)
                pb.copy_(b)
