"""Tiny random-weight models for tests, demos, benchmarks and CI (outside the node packs).

`tiny_kolors` builds Kolors in its three file layouts; `tiny_sd` builds SD1.5, SDXL and SDXL
refiner single-file checkpoints in the original key layout, with kohya LoRAs. Importing this
package imports nothing heavy; the modules import torch and diffusers.
"""
