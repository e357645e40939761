"""`/view` and `/upload/image`: files of the output, input and temp folders, and nothing else.

Every name goes through `graphgen.files.safe_join` (no absolute paths, no `..`, no symbolic link
leading out of the folder); uploads must be images, are limited in size by the app's
`client_max_size`, and never replace a different file unless `overwrite` is asked for (and never
a file of the output or temp folder: generated images are not overwritten).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import re
from pathlib import Path

from aiohttp import web

from graphgen.files import UnsafePathError, atomic_write_bytes, relative_parts, safe_folder, safe_join
from graphgen.limits import ImageTooLargeError, open_image
from graphgen.server.responses import BadRequest, error_response, flag, json_response
from graphgen.server.state import ServerState, state_of

UPLOAD_TYPES = ("input", "temp", "output")
MAX_NAME_BYTES = 255  # a file name part on common file systems
MAX_PATH_BYTES = 1024
VIEW_TYPES = ("output", "input", "temp")


def _folder(state: ServerState, kind: str, allowed: tuple[str, ...]) -> Path:
    folder = state.folder(kind) if kind in allowed else None
    if folder is None:
        raise BadRequest("invalid_type", f"type must be one of {', '.join(allowed)}, not {kind!r}")
    return folder


def _resolve(folder: Path, subfolder: str, filename: str) -> Path:
    """The file `subfolder/filename` inside `folder`; 400 for any name that would leave it or that no file
    system takes (too long, not encodable)."""
    if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
        raise BadRequest("invalid_filename", f"invalid file name {filename[:100]!r}")
    try:
        parts_too_long = any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in re.split(r"[/\\]", subfolder))
        if len(os.fsencode(filename)) > MAX_NAME_BYTES or len(os.fsencode(subfolder)) > MAX_PATH_BYTES or parts_too_long:
            raise BadRequest("invalid_filename", f"the file name is too long (at most {MAX_NAME_BYTES} bytes a "
                                                 f"part, and {MAX_PATH_BYTES} for the subfolder)")
        parts = relative_parts(subfolder) if subfolder.strip() not in ("", ".") else []
        return safe_join(folder, "/".join([*parts, filename]))
    except UnsafePathError as exc:
        raise BadRequest("invalid_path", str(exc), status=403) from None
    except (OSError, ValueError) as exc:  # e.g. a name part too long for the file system
        raise BadRequest("invalid_filename", f"invalid file name: {exc.strerror if isinstance(exc, OSError) else exc}") \
            from None


async def view(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    query = request.query
    folder = _folder(state, query.get("type") or "output", VIEW_TYPES)
    path = _resolve(folder, query.get("subfolder", ""), query.get("filename", ""))
    try:
        found = path.is_file()
    except OSError:  # ENAMETOOLONG and the like: no such file can exist
        found = False
    if not found:
        return error_response(404, "not_found", f"{query.get('filename')!r} is not in the {query.get('type') or 'output'} folder")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache",
               "Content-Disposition": f'filename="{path.name}"', "X-Content-Type-Options": "nosniff"}
    if content_type not in ("image/png", "image/jpeg", "image/webp", "image/gif"):
        headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return web.FileResponse(path, headers=headers)


def _check_image(data: bytes, name: str) -> None:
    from PIL import UnidentifiedImageError

    try:
        with open_image(io.BytesIO(data), f"the upload {name[:100]!r}") as image:  # the size, before decoding
            image.verify()
    except ImageTooLargeError as exc:
        raise BadRequest("image_too_large", str(exc), status=413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadRequest("invalid_image", f"the upload is not a readable image: {exc}") from None


def _free_name(folder: Path, name: str, data: bytes) -> tuple[str, bool]:
    """A name for the upload: `name`, or `stem (n).ext`; (name, True) when an identical file exists."""
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    digest = hashlib.sha256(data).digest()
    for index in range(0, 10_000):
        candidate = name if index == 0 else f"{stem} ({index}){dot}{suffix}"
        target = folder / candidate
        if not target.exists():
            return candidate, False
        if target.is_file() and target.stat().st_size == len(data) and \
                hashlib.sha256(target.read_bytes()).digest() == digest:
            return candidate, True
    raise BadRequest("name_taken", f"no free name left for {name!r}")


async def upload_image(request: web.Request) -> web.Response:
    state = state_of(request)
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("invalid_request", "send the image as multipart/form-data in the field 'image'")
    form = await request.post()  # the body is limited by client_max_size (413 beyond it)
    image = form.get("image")
    if not isinstance(image, web.FileField):
        raise BadRequest("no_image", "the form has no file field 'image'")
    kind = str(form.get("type") or "input")
    folder_root = _folder(state, kind, UPLOAD_TYPES)
    subfolder = str(form.get("subfolder") or "")
    target = _resolve(folder_root, subfolder, image.filename or "")  # refuses traversal in either part
    data = image.file.read()
    if len(data) > state.config.max_upload_bytes:
        raise BadRequest("too_large", f"the upload is larger than {state.config.max_upload_bytes} bytes", status=413)
    _check_image(data, target.name)
    try:
        folder = safe_folder(folder_root, relative_parts(subfolder) if subfolder.strip() not in ("", ".") else [])
    except UnsafePathError as exc:
        raise BadRequest("invalid_path", str(exc), status=403) from None
    # Generated images (outputs, and previews in temp) are never replaced: there `overwrite` gives a new name.
    if flag(str(form.get("overwrite") or ""), False) and kind == "input":
        final = target.name
        atomic_write_bytes(folder / final, data, overwrite=True)
    else:
        final = _write_new(folder, target.name, data)
    return json_response({"name": final, "subfolder": subfolder, "type": kind})


def _write_new(folder: Path, name: str, data: bytes) -> str:
    """Write `data` under `name` or the first free `stem (n).ext`, never replacing a file; the name used."""
    for _ in range(100):
        final, same = _free_name(folder, name, data)
        if same:
            return final
        try:
            atomic_write_bytes(folder / final, data)
            return final
        except FileExistsError:  # taken meanwhile by another upload: look again
            continue
    raise BadRequest("name_taken", f"no free name found for {name!r}")


ROUTES = [("GET", "/view", view), ("POST", "/upload/image", upload_image)]
