"""`comfy.utils`: progress bars, image resizing and safe weight loading, as ComfyUI packs call them."""

from __future__ import annotations

from typing import Any

from graphgen.compat import _runtime

PROGRESS_BAR_ENABLED = True
_progress_hook: Any = None


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Any) -> None:
    """Packs that install their own hook get it called as ComfyUI calls it: (value, total, preview, node_id)."""
    global _progress_hook
    _progress_hook = function


class ProgressBar:
    """Step progress of the running node, reported as graphgen `node_progress` events.

    `ProgressBar(total, node_id=None)`; `update(n)` adds n steps, `update_absolute(value, total=None,
    preview=None)` sets the position. Each update also honours a pending cancel (raises `Cancelled`).
    """

    def __init__(self, total: float, node_id: Any = None) -> None:
        self.total = total
        self.current: float = 0
        self.node_id = node_id
        self._ctx = _runtime.context()  # captured now: updates may come from a worker thread

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        if _progress_hook is not None:
            _progress_hook(self.current, self.total, preview, self.node_id)
        ctx = self._ctx or _runtime.context()
        if ctx is not None and PROGRESS_BAR_ENABLED:
            ctx.progress(self.current, self.total)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


def common_upscale(samples: Any, width: int, height: int, upscale_method: str, crop: str) -> Any:
    """Resize a `[B, C, H, W]` tensor to `height` x `width` (crop "center" keeps the aspect ratio).

    Methods as ComfyUI names them: nearest-exact, bilinear, area, bicubic, lanczos (bicubic with
    antialiasing here), bislerp (bilinear here).
    """
    import torch.nn.functional as F  # noqa: N812 - torch's convention

    if crop == "center":
        old_height, old_width = samples.shape[-2], samples.shape[-1]
        old_aspect, new_aspect = old_width / old_height, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)
    if upscale_method == "lanczos":
        return F.interpolate(samples, size=(height, width), mode="bicubic", antialias=True)
    if upscale_method == "bislerp":
        upscale_method = "bilinear"
    return F.interpolate(samples, size=(height, width), mode=upscale_method)


def load_torch_file(ckpt: str, safe_load: bool = True, device: Any = None, return_metadata: bool = False) -> Any:
    """A state dict from `.safetensors` or a pickle read with `weights_only=True` (never unsafe).

    `safe_load=False` is accepted and ignored: pickles are read by `graphgen.pickles` only, whose
    refusal says what the file is instead of advising `weights_only=False`.
    """
    import torch

    from graphgen.pickles import load_weights_pickle

    device = device or torch.device("cpu")
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        with safe_open(ckpt, framework="pt", device=str(device)) as handle:
            metadata = handle.metadata()
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    else:
        loaded = load_weights_pickle(ckpt, map_location=device)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    return (state, metadata) if return_metadata else state


def save_torch_file(sd: dict[str, Any], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file(sd, ckpt, metadata=metadata)


def repeat_to_batch_size(tensor: Any, batch_size: int, dim: int = 0) -> Any:
    """Cut or repeat `tensor` along `dim` to `batch_size` entries."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = -(-batch_size // size)
        return tensor.repeat(*repeats).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: Any, batch_size: int) -> Any:
    """Like `repeat_to_batch_size` on the first dimension."""
    return repeat_to_batch_size(tensor, batch_size)
