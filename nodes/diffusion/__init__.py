"""The shared diffusion layer: no nodes, the pieces every model family's pack uses.

`schedulers` (Kolors' scheduler names) and `comfy_samplers` (ComfyUI's sampler × scheduler names)
on diffusers' schedulers, `denoise` (the KSampler loop), `vae_ops` (decode/encode with the fp16
guard and tiling), `images` (image files), `clip_tokenizer` (the shipped CLIP vocabulary) and
`ldm_keys` (original LDM UNet names).
"""

NODES: list[type] = []
