"""Reading the workflow embedded in a PNG image (graphgen's own, or ComfyUI's).

Images saved by graphgen carry a `graphgen_workflow` text chunk (the graphgen workflow) and a
`prompt` chunk (the API form); images saved by ComfyUI carry `prompt` (API form) and `workflow`
(the editor's UI form). The first of `graphgen_workflow`, `prompt`, `workflow` that holds a
readable workflow is used.

The chunks are read by a small PNG parser (no image decoding, no Pillow): `tEXt`, `zTXt` and
`iTXt` (compressed or not). Chunk checksums are verified, so a damaged file is reported as such.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from graphgen.errors import Issue, WorkflowError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Text chunks that may hold a workflow, in the order they are tried.
WORKFLOW_CHUNKS = ("graphgen_workflow", "prompt", "workflow")
MAX_TEXT_BYTES = 256 * 1024 * 1024  # a decompressed text chunk larger than this is refused

__all__ = ["PNG_SIGNATURE", "WORKFLOW_CHUNKS", "is_png", "png_text_chunks", "read_png_workflow",
           "workflow_from_png_bytes"]


def is_png(raw: bytes) -> bool:
    """Whether `raw` starts with the PNG signature."""
    return raw[:8] == PNG_SIGNATURE


def _corrupt(origin: str, why: str) -> WorkflowError:
    return WorkflowError([Issue(code="invalid_png", message=f"{origin} is a corrupt PNG image: {why}",
                                hint="use an intact PNG saved by graphgen or ComfyUI, or the workflow's JSON file")])


def _inflate(data: bytes, origin: str, key: str) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(data, MAX_TEXT_BYTES)
    except zlib.error as exc:
        raise _corrupt(origin, f"the compressed text chunk {key!r} cannot be read ({exc})") from None
    if decompressor.unconsumed_tail:
        raise _corrupt(origin, f"the text chunk {key!r} is larger than {MAX_TEXT_BYTES} bytes")
    return out


def png_text_chunks(raw: bytes, origin: str = "image") -> dict[str, str]:
    """The text chunks of a PNG (`tEXt`, `zTXt`, `iTXt`), by key; the first of a repeated key wins.

    Raises:
        WorkflowError: not a PNG, truncated, or a chunk whose checksum or compression is wrong.
    """
    if not is_png(raw):
        raise WorkflowError([Issue(code="invalid_png", message=f"{origin} is not a PNG image",
                                   hint="give a PNG saved by graphgen or ComfyUI")])
    texts: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    chunks = 0
    while pos < len(raw):
        if pos + 8 > len(raw):
            raise _corrupt(origin, f"truncated chunk header at byte {pos}")
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > len(raw):
            raise _corrupt(origin, f"chunk {kind!r} at byte {pos} runs past the end of the file")
        data = raw[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[end - 4:end])
        if zlib.crc32(kind + data) & 0xFFFFFFFF != crc:
            raise _corrupt(origin, f"chunk {kind.decode('latin-1', 'replace')!r} at byte {pos} fails its checksum")
        pos = end
        chunks += 1
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        key_bytes, sep, rest = data.partition(b"\0")
        if not sep:
            continue
        key = key_bytes.decode("latin-1")
        if kind == b"tEXt":
            text = rest.decode("latin-1")
        elif kind == b"zTXt":
            text = _inflate(rest[1:], origin, key).decode("latin-1")
        else:
            if len(rest) < 2:
                continue
            compressed = rest[0] == 1
            _, _, rest = rest[2:].partition(b"\0")  # language tag
            _, _, body = rest.partition(b"\0")  # translated key
            payload = _inflate(body, origin, key) if compressed else body
            text = payload.decode("utf-8", "replace")
        texts.setdefault(key, text)
    if not chunks:
        raise _corrupt(origin, "the file ends right after the PNG signature")
    return texts


def workflow_from_png_bytes(raw: bytes, origin: str = "image") -> tuple[str, Any]:
    """The workflow embedded in PNG bytes, as `(chunk name, parsed JSON)`.

    Raises:
        WorkflowError: a corrupt PNG, or one that carries no readable workflow.
    """
    texts = png_text_chunks(raw, origin)
    problems: list[str] = []
    for key in WORKFLOW_CHUNKS:
        if key not in texts:
            continue
        try:
            data = json.loads(texts[key])
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            problems.append(f"its {key!r} chunk is not valid JSON ({exc})")
            continue
        if isinstance(data, dict) and data:
            return key, data
        problems.append(f"its {key!r} chunk holds no workflow")
    if problems:
        message = f"{origin} carries no readable workflow: " + "; ".join(problems)
    else:
        found = ", ".join(repr(k) for k in texts) or "none"
        message = (f"{origin} is a PNG image without an embedded workflow (text chunks found: {found}; "
                   f"looked for {', '.join(WORKFLOW_CHUNKS)})")
    raise WorkflowError([Issue(code="no_workflow_in_png", message=message,
                               hint="use an image saved by graphgen's or ComfyUI's SaveImage, "
                                    "or run the workflow's JSON file")])


def read_png_workflow(path: str | Path) -> Any:
    """Read the workflow embedded in a PNG file: graphgen's, else ComfyUI's API prompt, else its UI workflow.

    Returns:
        The parsed JSON (graphgen, API or UI format; `graphgen.workflow.workflow_from_data` and
        `Engine.prepare` take it from there).

    Raises:
        WorkflowError: the file is missing or unreadable, not a PNG, corrupt, or has no workflow.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowError([Issue(code="file_not_found", message=f"image {str(path)!r} does not exist",
                                   hint="check the path")]) from None
    except OSError as exc:
        raise WorkflowError([Issue(code="file_unreadable", message=f"cannot read {str(path)!r}: {exc.strerror}",
                                   hint="check the file's permissions")]) from None
    return workflow_from_png_bytes(raw, str(path))[1]
