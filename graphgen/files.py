"""Writing files safely: atomically, never clobbering, never outside the output folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


class UnsafePathError(ValueError):
    """A file name would leave the folder it must stay in."""


def safe_join(root: str | os.PathLike[str], relative: str) -> Path:
    """Join `relative` onto `root`, refusing anything that would end up outside `root`.

    Absolute paths, `..` parts and symbolic links pointing out of `root` are refused.
    """
    if not relative or not relative.strip():
        raise UnsafePathError("the file name is empty")
    if "\x00" in relative:
        raise UnsafePathError("the file name contains a NUL character")
    candidate = Path(relative)
    if candidate.is_absolute() or candidate.drive or relative.startswith(("/", "\\")):
        raise UnsafePathError(f"{relative!r} is an absolute path; give a name relative to the output folder")
    if any(part == ".." for part in Path(relative.replace("\\", "/")).parts):
        raise UnsafePathError(f"{relative!r} contains '..'; it must stay inside the output folder")
    base = Path(root).resolve()
    target = (base / candidate).resolve()
    if target != base and base not in target.parents:
        raise UnsafePathError(f"{relative!r} leads outside the output folder {str(base)!r}")
    return base / candidate


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, overwrite: bool = False) -> Path:
    """Write a file through a temporary file in the same folder, then move it into place.

    Readers never see a half-written file. With `overwrite=False` an existing file is never
    replaced (the final step is a hard link, which fails if the name is taken).

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp_name, path)
        else:
            os.link(tmp_name, path)  # atomic, and refuses an existing name
            os.unlink(tmp_name)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), overwrite=overwrite)


def atomic_write_text(path: Path, text: str, *, overwrite: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_new_file(folder: Path, stem: str, suffix: str, write: Callable[[IO[bytes]], None],
                   start: int = 1, max_tries: int = 100_000) -> Path:
    """Write `folder/stem_00001_suffix`, taking the first free number; never overwrites.

    Safe against concurrent writers: a name is claimed by the atomic final link.
    """
    counter = max(start, _next_counter(folder, stem, suffix))
    for _ in range(max_tries):
        path = folder / f"{stem}_{counter:05d}_{suffix}"
        try:
            return atomic_write(path, write, overwrite=False)
        except FileExistsError:
            counter += 1
    raise FileExistsError(f"no free file name for {stem!r} in {str(folder)!r}")


def _next_counter(folder: Path, stem: str, suffix: str) -> int:
    if not folder.is_dir():
        return 1
    best = 0
    prefix = f"{stem}_"
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith(f"_{suffix}"):
            middle = name[len(prefix):-len(suffix) - 1]
            if middle.isdigit():
                best = max(best, int(middle))
    return best + 1
