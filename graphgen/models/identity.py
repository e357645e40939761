"""How a model on disk is named: its identity (for store keys and node fingerprints) and its path.

Both are family-agnostic: every loader keys the model store by `file_identity` and finds relative
paths under `--models-dir` with `resolve_model_path`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphgen.context import EngineSettings

# File types whose size and mtime identify a model folder's contents.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".model", ".txt")


def file_identity(path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """Size and mtime of a file, or of the weight/config files in a folder (3 levels deep).

    Used as store keys and cache-key fingerprints: replacing a model file re-runs the nodes that
    load it and loads the new weights.
    """
    root = Path(path)
    try:
        if root.is_file():
            stat = root.stat()
            return (str(root.resolve()), stat.st_size, stat.st_mtime_ns)
        if not root.is_dir():
            return (str(root), "missing")
        entries: list[tuple[str, int, int]] = []
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root):
            if len(Path(folder).parts) - base_depth >= 3:
                dirs[:] = []
            dirs.sort()
            for name in sorted(files):
                if name.endswith(_WEIGHT_SUFFIXES):
                    stat = os.stat(os.path.join(folder, name))
                    entries.append((os.path.relpath(os.path.join(folder, name), root), stat.st_size, stat.st_mtime_ns))
        digest = hashlib.blake2b(repr(entries).encode(), digest_size=12).hexdigest()
        return (str(root.resolve()), digest)
    except OSError as exc:
        return (str(root), "unreadable", exc.errno)


def resolve_model_path(settings: EngineSettings | None, path: str, *subfolders: str) -> Path:
    """A model path as given, or relative to the engine's models folder (and its subfolders)."""
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
