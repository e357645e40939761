"""The ComfyUI vocabulary pack: the node names Kolors users' ComfyUI workflows use.

kijai's ComfyUI-KwaiKolorsWrapper (`DownloadAndLoadKolorsModel`, `DownloadAndLoadChatGLM3`,
`LoadChatGLM3`, `KolorsSampler`; `KolorsTextEncode` is native), the tutorial's `LoadKolorsLoRA`, and
the ComfyUI core loaders `VAELoader` and `LoraLoaderModelOnly`. All are thin adapters over the native
Kolors and LoRA nodes. Models are found by name under `--models-dir` (ComfyUI layout); nothing is
downloaded.
"""

from . import core_nodes, kolors_wrapper

NODES: list[type] = [*kolors_wrapper.NODES, *core_nodes.NODES]
