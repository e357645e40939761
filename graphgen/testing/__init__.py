"""Tiny random-weight models, the demo and its data, for tests, demos, benchmarks and CI (outside the node packs).

`tiny_kolors` builds Kolors in its three file layouts; `tiny_sd` builds SD1.5, SDXL and SDXL
refiner single-file checkpoints in the original key layout, with kohya LoRAs; `demo` and
`demo_data` run `graphgen demo`. Importing this package imports nothing heavy; the modules import
torch and diffusers.
"""
