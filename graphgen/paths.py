"""Where node file inputs may point: confining them to the engine's folders when a run asks for it.

From the command line a workflow is the user's own, and its nodes read any path they name. A
server runs workflows sent by whoever reaches it, so there (`EngineSettings.confine_paths`, set
by `graphgen serve`) every file a built-in node reads - an image, a model, a LoRA, a dataset
and the images it lists - must lie inside the input, models or output folder, as ComfyUI
confines `LoadImage`. The nodes' path resolution goes through `locate` (one mechanism, not a
check per node). A refusal never says whether the file exists: a missing file and a forbidden
one get the same message, so the server cannot be used to probe the disk.

Containment is checked on the path as written (`..` collapsed) or as resolved: a symbolic link
the administrator put inside a folder (a model folder kept on another disk) is followed, while
`..` and absolute paths cannot leave the folders; requests cannot create links.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen.files import file_identity

if TYPE_CHECKING:
    from graphgen.context import EngineSettings


class PathNotAvailableError(FileNotFoundError):
    """A file input that a confined run may not read, or that does not exist (one message for both)."""


def allowed_roots(settings: EngineSettings) -> list[Path]:
    """The folders a confined run reads from: input, models (when set) and output."""
    roots = [settings.input_dir, settings.models_dir, settings.output_dir]
    return [Path(os.path.abspath(root)) for root in roots if root is not None]


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def inside_roots(settings: EngineSettings, path: str | os.PathLike[str],
                 also: Iterable[str | os.PathLike[str]] = ()) -> bool:
    """Whether `path` lies inside one of `allowed_roots` or of the folders `also` (as written, or once
    links are resolved).

    `also` is for folders that code, not the request, chose: the folder a ComfyUI pack resolves a
    name against (`folder_paths.get_annotated_filepath(name, default_dir)`).
    """
    try:
        written = Path(os.path.abspath(Path(path).expanduser()))
        real = Path(os.path.realpath(written))
    except (OSError, ValueError):
        return False
    for root in [*allowed_roots(settings), *(Path(os.path.abspath(folder)) for folder in also)]:
        if _within(written, root) or _within(real, Path(os.path.realpath(root))):
            return True
    return False


def not_available(what: str, name: str) -> PathNotAvailableError:
    """The refusal of a confined run, the same whether the file is missing or outside the folders."""
    return PathNotAvailableError(
        f"{what} {str(name)[:200]!r} is not available: this server reads files only from its input, models and "
        "output folders; upload the file or put it in one of them, and name it relative to that folder")


def confine(settings: EngineSettings | None, path: Path, what: str, name: str) -> Path:
    """`path` unchanged in an unconfined run; in a confined one, `path` if it exists inside the folders.

    Raises:
        PathNotAvailableError: confined, and `path` is missing or outside the folders.
    """
    if settings is None or not settings.confine_paths:
        return path
    try:
        exists = path.exists()
    except (OSError, ValueError):
        exists = False
    if not exists or not inside_roots(settings, path):
        raise not_available(what, name)
    return path


def locate(settings: EngineSettings | None, what: str, name: str, resolve: Callable[[], Path]) -> Path:
    """Resolve a node's file input with `resolve()`, confined when the run asks for it.

    In a confined run any failure of `resolve` (a missing model with its detailed message) becomes
    the one `not_available` message, so that nothing tells a missing file from a forbidden one.

    Args:
        settings: The run's settings (None: unconfined).
        what: What the input names, for the message ("image", "LoRA file", "dataset folder").
        name: The value as given.
        resolve: The node's own resolution (relative to its folders, its layouts).
    """
    if settings is None or not settings.confine_paths:
        return resolve()
    try:
        path = resolve()
    except (OSError, ValueError):
        raise not_available(what, name) from None
    return confine(settings, path, what, name)


def located_identity(settings: EngineSettings | None, what: str, name: str, resolve: Callable[[], Path]) -> Hashable:
    """`file_identity` of what `locate` finds, for fingerprints; a refused or missing input gets an identity
    too (the node then runs and reports the problem; failures are never cached)."""
    try:
        return file_identity(locate(settings, what, name, resolve))
    except (OSError, ValueError) as exc:
        return ("not available", what, str(name), type(exc).__name__)
