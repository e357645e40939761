"""Optional per-run speed-ups a loader applies to a model as it loads it (each off by default).

* ``channels_last``: 4-D weights (convolutions) in NHWC layout. On NVIDIA tensor cores cuDNN then
  skips layout transposes around every convolution. Same arithmetic; outputs may differ only by
  the float rounding of another kernel choice (well under one 8-bit pixel level).
* ``compile``: `torch.compile` of the module's forward, in place (`nn.Module.compile`), so the
  module, its parameters and their names are unchanged: LoRAs still match and apply, the store
  still moves it. The first call compiles (tens of seconds for a full-size UNet, again for each
  new image size), later calls run fused kernels. Outputs may differ by float rounding from the
  eager run (inductor reorders reductions).

Precision (fp16 vs bf16) is the loaders' `precision` input, and VAE tiling the decoders' `tiled`
input; neither belongs here. The options are part of the model-store key, so a compiled and an
eager copy of the same files are two entries, never a silent mix.
"""

from __future__ import annotations

from typing import Any


def speedup_key(*, compile: bool = False, channels_last: bool = False) -> tuple[str, ...]:
    """The store-key part naming the speed-ups asked for (empty when none, so keys stay as before)."""
    return tuple(name for name, on in (("compile", compile), ("channels_last", channels_last)) if on)


def apply_speedups(module: Any, *, compile: bool = False, channels_last: bool = False) -> Any:
    """Apply the asked speed-ups to `module` in place and return it."""
    import torch

    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile:
        module.compile()
    return module
