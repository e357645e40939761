"""How a model on disk is named: its identity (for store keys and node fingerprints) and its path.

Both are family-agnostic: every loader keys the model store by `file_identity` (the one rule of
`graphgen.files`, re-exported here) and finds relative paths under `--models-dir` with
`resolve_model_path`.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.files import file_identity
from graphgen.paths import locate, located_identity

if TYPE_CHECKING:
    from graphgen.context import EngineSettings

__all__ = ["file_identity", "model_identity", "resolve_model_path", "weights_on_disk"]

def resolve_model_path(settings: EngineSettings | None, path: str, *subfolders: str, what: str = "model") -> Path:
    """A model path as given, or relative to the engine's models folder (and its subfolders).

    In a run with `confine_paths` (the server) it must exist inside the engine's folders
    (`graphgen.paths.locate`), else `PathNotAvailableError` (one message for missing and forbidden).
    """
    return locate(settings, what, path, lambda: _find_model_path(settings, path, subfolders))


def model_identity(settings: EngineSettings | None, path: str, *subfolders: str, what: str = "model") -> Hashable:
    """`file_identity` of the model `resolve_model_path` finds, for fingerprints (never raises)."""
    return located_identity(settings, what, path, lambda: _find_model_path(settings, path, subfolders))


def _find_model_path(settings: EngineSettings | None, path: str, subfolders: tuple[str, ...]) -> Path:
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists() or settings is None or settings.models_dir is None:
        return given
    models = settings.models_dir
    # The shipped workflows name `models/kolors/Kolors` (relative to a working folder whose
    # `models/` is the models folder): under --models-dir that prefix is the models folder itself.
    inside = Path(*given.parts[1:]) if len(given.parts) > 1 and given.parts[0] == "models" else given
    for name in dict.fromkeys([given, inside]):
        for candidate in [models / name, *(models / sub / name for sub in subfolders)]:
            if candidate.exists():
                return candidate
    return given


_TENSOR_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")


def weights_on_disk(path: str | os.PathLike[str]) -> int:
    """Bytes of weight files at `path` (a file, or a folder 3 levels deep): an upper bound of the
    memory a model loaded from there takes in the files' dtype, known before loading it."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    total, base_depth = 0, len(root.parts)
    for folder, dirs, files in os.walk(root):
        if len(Path(folder).parts) - base_depth >= 3:
            dirs[:] = []
        total += sum(os.path.getsize(os.path.join(folder, n)) for n in files if n.endswith(_TENSOR_SUFFIXES))
    return total
