"""Shared pytest configuration: offline hub, the session-scoped tiny Kolors models, one torch thread."""

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
from fixtures_kolors import *  # noqa: E402,F401,F403


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module's tests: tiny models run much faster single-threaded on a
    shared 2-core machine (OpenMP threads spin-wait otherwise). Modules that train or sample tiny
    models use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
