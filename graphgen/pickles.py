"""Reading pickled weights (`.ckpt`, `.bin`, `.pt`) safely, with errors a user can act on.

Pickles are only ever read with `torch.load(weights_only=True)`. When that refuses a file,
PyTorch's own message advises re-running with `weights_only=False`, which would execute whatever
the file contains: graphgen never does that and never repeats the advice. Instead the message says
what the file is (an image, a text file, a checkpoint holding objects other than tensors...).
"""

from __future__ import annotations

import os
from typing import Any

# Leading bytes of files people pass by mistake, and what they are.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP image or audio)"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


class UnsafeOrUnreadablePickle(ValueError):
    """A pickled weights file that `torch.load(weights_only=True)` cannot read; the message says why."""


def sniff(path: str | os.PathLike[str]) -> str | None:
    """What a file that is not a torch checkpoint looks like (`"a PNG image"`), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None  # torch's zip format, or a raw pickle
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return None


def load_weights_pickle(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`, onto `map_location` (the CPU by default).

    Raises:
        UnsafeOrUnreadablePickle: naming the file and what is wrong, without PyTorch's advice.
    """
    import torch

    what = sniff(path)
    if what is not None:
        raise UnsafeOrUnreadablePickle(f"the file is {what}, not a weights file (.safetensors, "
                                       ".ckpt, .bin or .pt)")
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise UnsafeOrUnreadablePickle(f"the file was refused: {reason(exc)}; graphgen reads pickled "
                                       "weights only as plain tensors (weights_only=True), never running "
                                       "code from a file: convert it to .safetensors with a tool you trust") from None


def reason(exc: BaseException) -> str:
    """The useful part of a `torch.load` error (the unpickler's complaint, not the advice around it)."""
    text = str(exc)
    for marker in ("WeightsUnpickler error:", "Unsupported global:", "Unsupported operand"):
        if marker in text:
            tail = text[text.index(marker):].replace("WeightsUnpickler error:", "").strip()
            line = next((part.strip() for part in tail.splitlines() if part.strip()), "")
            return line.split(". ")[0] or type(exc).__name__
    first = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if "weights_only" in first or not first:
        return f"not a plain tensor checkpoint ({type(exc).__name__})"
    return first
