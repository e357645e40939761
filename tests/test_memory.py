"""GPU memory policy, tested with a recording mover (no GPU needed): LRU eviction under a budget,
text-encoder offload after use, sequential offload for a model larger than the budget."""

from __future__ import annotations

import torch

from graphgen_nodes.kolors.handles import ModelHandle
from graphgen_nodes.kolors.memory import DeviceMemory


class FakeHandle(ModelHandle):
    def __init__(self, name: str, nbytes: int, offload: bool = False) -> None:
        super().__init__(kind=name, model=None, device=torch.device("cuda"), dtype=torch.float16, key=name,
                         source=name, offload=offload)
        self._nbytes = nbytes

    def resource_nbytes(self) -> int:
        return self._nbytes


def recorder():
    moves: list[tuple[str, str]] = []
    return moves, lambda handle, device: moves.append((handle.kind, device.type))


def test_lru_eviction_under_budget():
    moves, mover = recorder()
    memory = DeviceMemory(budget=100, mover=mover)
    unet, vae, text = FakeHandle("unet", 50), FakeHandle("vae", 10), FakeHandle("text", 60, offload=True)
    memory.acquire(unet)
    memory.acquire(vae)
    assert moves == [("unet", "cuda"), ("vae", "cuda")]
    memory.acquire(text)  # needs 60: the least recently used (unet) must go
    assert moves[2:] == [("unet", "cpu"), ("text", "cuda")]
    memory.release(text)  # offload model leaves right after use
    assert moves[-1] == ("text", "cpu") and [h.kind for h in memory.resident()] == ["vae"]
    memory.acquire(unet)
    assert moves[-1] == ("unet", "cuda")
    memory.acquire(vae)  # already there: no move, becomes most recent
    assert moves[-1] == ("unet", "cuda")


def test_release_keeps_non_offload_models_and_free_moves_all():
    moves, mover = recorder()
    memory = DeviceMemory(budget=1000, mover=mover)
    unet = FakeHandle("unet", 50)
    memory.acquire(unet)
    memory.release(unet)
    assert memory.resident() == [unet]
    memory.free()
    assert moves[-1] == ("unet", "cpu") and memory.resident() == []


def test_model_larger_than_budget_streams(monkeypatch):
    moves, mover = recorder()
    memory = DeviceMemory(budget=100, mover=mover)
    calls = []
    monkeypatch.setattr(DeviceMemory, "_sequential_offload", lambda self, h: calls.append(h.kind))
    small = FakeHandle("vae", 10)
    memory.acquire(small)
    memory.acquire(FakeHandle("text", 500, offload=True))
    assert calls == ["text"] and ("vae", "cpu") in moves


def test_cpu_models_are_never_moved():
    moves, mover = recorder()
    memory = DeviceMemory(budget=1, mover=mover)
    handle = FakeHandle("unet", 50)
    handle.device = torch.device("cpu")
    memory.acquire(handle)
    memory.release(handle)
    assert moves == []
