"""`comfy_api.latest.ui`: UI results schema nodes attach to `NodeOutput(ui=...)`."""

from __future__ import annotations

from typing import Any


class _UIOutput:
    """A UI result; `as_dict()` is what the node's `ui` becomes."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


class PreviewText(_UIOutput):
    """Text shown on the node."""

    def __init__(self, value: str, **_: Any) -> None:
        super().__init__({"text": [value]})


class SavedResult(dict):  # type: ignore[type-arg]
    """One saved file: `{filename, subfolder, type}`."""

    def __init__(self, filename: str, subfolder: str, type: Any) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))


class SavedImages(_UIOutput):
    """Images already written: `SavedImages([SavedResult(...), ...])`."""

    def __init__(self, results: list[Any], is_animated: bool = False) -> None:
        super().__init__({"images": list(results), **({"animated": (True,)} if is_animated else {})})


class PreviewImage(_UIOutput):
    """Images shown on the node: written as temporary PNGs now."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        from graphgen.compat.nodes import PreviewImage as Preview

        super().__init__(Preview().save_images(image)["ui"])
