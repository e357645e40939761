"""Files: writing them safely (atomically, never clobbering, never outside the output folder),
and telling when a file that was read has changed (`file_identity`).

Every file graphgen and its packs write (images, LoRAs, checkpoints, caches, workflows) goes
through here: a temporary file in the target folder is written and synced, then published under
its name in one step. `overwrite=False` publishes with a hard link, which fails if the name is
taken, so an existing file is never replaced (on file systems without hard links the name is
reserved with O_EXCL first). Files get the usual permissions (0666 minus the umask), not the
0600 of a temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

MAX_COUNTER = 99_999_999
#: Files of a model folder that loaders read (weights, configs, tokenizers): what a folder's identity covers.
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".bin", ".ckpt", ".pt", ".pth", ".json", ".model", ".txt",
                       ".tiktoken", ".gguf")
#: How deep `file_identity` looks into a folder (a Kolors root → text_encoder → its files is 2).
FOLDER_DEPTH = 3


class UnsafePathError(ValueError):
    """A file name would leave the folder it must stay in."""


def _stat_identity(stat: os.stat_result) -> tuple[int, ...]:
    # size and mtime alone miss a same-size replacement whose mtime was kept (`cp -p`, `rsync -t`,
    # unpacking an archive); the inode (a new file) and st_ctime_ns (set by the kernel on every
    # write, rename or chmod; no copy can preserve it) catch it.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_identity(path: str | os.PathLike[str], suffixes: Sequence[str] = MODEL_FILE_SUFFIXES) -> tuple[Any, ...]:
    """What identifies a file's (or a model folder's) current contents, for cache keys.

    The one rule every loader and fingerprint uses: a file is its device, inode, size, mtime and
    ctime. A folder (a diffusers layout, a tutorial Kolors root) is the identities of the files in
    it whose names end with one of `suffixes`, down to `FOLDER_DEPTH` levels (following symbolic
    links, as the loaders do), folded into one digest. A missing or unreadable path has an
    identity too (so the node runs and reports the problem itself, and is never served from a
    cache made when the file existed).

    Args:
        path: The file or folder.
        suffixes: For folders: the file name endings the loaders read.

    Returns:
        A hashable, printable tuple that changes whenever the contents may have changed.
    """
    root = Path(path)
    try:
        stat = root.stat()
        if not root.is_dir():
            return (str(root.resolve()), "file", *_stat_identity(stat))
        entries: list[tuple[str, tuple[int, ...]]] = []
        base_depth = len(root.parts)
        for folder, dirs, files in os.walk(root, followlinks=True):
            if len(Path(folder).parts) - base_depth >= FOLDER_DEPTH:
                dirs[:] = []  # also stops a symbolic-link loop
            dirs.sort()
            for name in sorted(files):
                if name.endswith(tuple(suffixes)):
                    full = os.path.join(folder, name)
                    with contextlib.suppress(OSError):  # a dangling link: not read by any loader either
                        entries.append((os.path.relpath(full, root), _stat_identity(os.stat(full))))
        digest = hashlib.blake2b(repr(entries).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return (str(root.resolve()), "folder", len(entries), digest)
    except FileNotFoundError:
        return (str(root), "missing")
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        return (str(root), "unreadable", getattr(exc, "errno", None))


def relative_parts(relative: str) -> list[str]:
    """Split a relative name into parts, refusing absolute paths, drive letters, `..` and NULs."""
    if not relative or not relative.strip():
        raise UnsafePathError("the file name is empty")
    if "\x00" in relative:
        raise UnsafePathError("the file name contains a NUL character")
    normalised = relative.replace("\\", "/")
    if normalised.startswith("/") or os.path.isabs(relative) or re.match(r"^[A-Za-z]:", normalised):
        raise UnsafePathError(f"{relative!r} is an absolute path; give a name relative to the output folder")
    parts = [part for part in normalised.split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise UnsafePathError(f"{relative!r} contains '..'; it must stay inside the output folder")
    return parts


def _inside(child: Path, root: Path) -> bool:
    return child == root or root in child.parents


def safe_join(root: str | os.PathLike[str], relative: str) -> Path:
    """Join `relative` onto `root`, refusing anything that would end up outside `root`.

    Absolute paths, `..` parts and symbolic links pointing out of `root` are refused.
    """
    parts = relative_parts(relative)
    base = Path(root).resolve()
    target = base.joinpath(*parts)
    if not _inside(target.resolve(), base):
        raise UnsafePathError(f"{relative!r} leads outside the output folder {str(base)!r}")
    return target


def safe_folder(root: str | os.PathLike[str], parts: Sequence[str]) -> Path:
    """Create `root/parts...` one level at a time, checking each level stays inside `root`.

    Checking as it goes (rather than after `mkdir(parents=True)`) refuses a symlink that points
    out of `root` before anything is created through it. Returns the resolved folder.
    """
    real_root = Path(root)
    real_root.mkdir(parents=True, exist_ok=True)
    real_root = real_root.resolve()
    current = real_root
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part:
            raise UnsafePathError(f"invalid folder name {part!r}")
        step = current / part
        if not (step.is_symlink() or step.exists()):
            with contextlib.suppress(FileExistsError):
                step.mkdir()
        resolved = step.resolve()
        if not _inside(resolved, real_root):
            raise UnsafePathError(f"{'/'.join(parts)!r} leads outside the output folder {str(real_root)!r}")
        if not resolved.is_dir():
            raise UnsafePathError(f"{str(step)!r} is not a folder")
        current = resolved
    return current


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give the finished temporary file its name (atomically; never replacing unless asked)."""
    os.chmod(tmp, _default_mode())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and refuses an existing name
    except FileExistsError:
        raise
    except OSError:
        # No hard links here (FAT, some network shares): reserve the name, then replace.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_via_path(path: str | os.PathLike[str], write: Callable[[Path], object], *,
                          overwrite: bool = False) -> Path:
    """Like `atomic_write`, for writers that take a file name (safetensors' `save_file`, `torch.save`).

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{str(path)!r} exists; it is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        _publish(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *,
                 overwrite: bool = False) -> Path:
    """Write a file through a temporary file in the same folder, then publish it under its name.

    Readers never see a half-written file; with `overwrite=False` an existing file is never replaced.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    def write_file(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    return atomic_write_via_path(path, write_file, overwrite=overwrite)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_new_file(folder: str | os.PathLike[str], stem: str, suffix: str,
                   write: Callable[[IO[bytes]], object]) -> Path:
    """Write `folder/<stem>_00001_<suffix>`, taking the first free number; never overwrites.

    The content is written once to a temporary file; the name is claimed atomically when it is
    published, so concurrent writers get distinct numbers.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        counter = _next_counter(folder, stem, suffix)
        while counter <= MAX_COUNTER:
            target = folder / f"{stem}_{counter:05d}_{suffix}"
            try:
                _publish(tmp, target, overwrite=False)
                return target
            except FileExistsError:
                counter += 1
        raise FileExistsError(f"no free file name left for {stem!r} in {str(folder)!r}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _next_counter(folder: Path, stem: str, suffix: str) -> int:
    """One more than the highest `<stem>_NNNNN_<suffix>` in the folder (1 when none)."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)_" + re.escape(suffix) + "$")
    highest = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = pattern.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1
