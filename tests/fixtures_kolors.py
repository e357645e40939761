"""Session-scoped pytest fixtures with tiny random-weight Kolors models.

``tests/conftest.py`` re-exports them (``from fixtures_kolors import *``). Heavy imports (torch,
diffusers) happen inside the fixtures, so test sessions that do not use them stay fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from graphgen.testing.tiny_kolors import TinyKolors, TinyModelPaths

__all__ = ["tiny_components", "tiny_models"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelPaths:
    """The tiny Kolors models (seed 0) written once per session in all three file layouts."""
    from graphgen.testing.tiny_kolors import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny-kolors"), seed=0)


@pytest.fixture(scope="session")
def tiny_components() -> TinyKolors:
    """The tiny Kolors components (seed 0), in memory. Treat them as read-only."""
    from graphgen.testing.tiny_kolors import build_tiny_components

    return build_tiny_components(0)


def unreadable_kolors_folder(path):
    """A folder laid out like a Kolors root (so validation passes) whose weights cannot be read:
    a model that fails only when it loads."""
    for part in ("unet", "text_encoder", "vae"):
        (path / part).mkdir(parents=True)
        (path / part / "config.json").write_text("{}")
        (path / part / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    return path
