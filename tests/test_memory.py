"""The VRAM policy (`graphgen.models.device_memory`) on a fake accelerator, no GPU needed.

Models are meta-device modules (sizes without memory) declared to compute on "cuda"; the store's
mover is a `FakeDevice` that records every move and the bytes on the card, so each test states
exactly what moved and what the card held at its fullest.
"""

from __future__ import annotations

import random

import pytest
import torch

from graphgen.models import ModelStore

GB = 1 << 30


class FakeDevice:
    """A pretend accelerator: which models are on it, every move, and the most bytes held at once."""

    def __init__(self) -> None:
        self.on: dict[int, int] = {}
        self.moves: list[tuple[str, str]] = []
        self.peak = 0

    def __call__(self, entry, device) -> None:
        self.moves.append((entry.kind, device.type))
        if device.type == "cpu":
            del self.on[id(entry)]
        else:
            assert id(entry) not in self.on, f"{entry.kind} moved to the card twice"
            self.on[id(entry)] = entry.nbytes
            self.peak = max(self.peak, sum(self.on.values()))

    def out(self) -> list[str]:
        return [kind for kind, where in self.moves if where == "cpu"]


def sized(nbytes: int) -> torch.nn.Module:
    """A module of `nbytes` (fp16) that allocates nothing."""
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.empty(nbytes // 2, dtype=torch.float16, device="meta"))
    return module


def make_store(budget: int, ram: int | None = None) -> tuple[ModelStore, FakeDevice]:
    device = FakeDevice()
    return ModelStore(max_bytes=ram, vram_budget=budget, mover=device), device


def load(store: ModelStore, kind: str, nbytes: int, offload: str = "auto", family: str = "kolors",
         device: str = "cuda"):
    return store.load(family=family, kind=kind, source=f"/nowhere/{family}/{kind}", device=torch.device(device),
                      dtype=torch.float16, loader=lambda: sized(nbytes), offload=offload)


def run_txt2img(text, unet, vae) -> None:
    """The order a Kolors run uses its models: encode, sample, decode."""
    for handle in (text, unet, vae):
        with handle.use():
            pass


def test_nothing_moves_when_everything_fits():
    store, card = make_store(budget=1000)
    text, unet, vae = load(store, "text", 300), load(store, "unet", 400), load(store, "vae", 100)
    for _ in range(3):
        run_txt2img(text, unet, vae)
    assert card.moves == [("text", "cuda"), ("unet", "cuda"), ("vae", "cuda")]  # in once, never out
    assert store.device_bytes() == 800 and card.peak == 800


def test_least_recently_used_model_moves_when_the_next_does_not_fit():
    store, card = make_store(budget=600)
    text, unet, vae = load(store, "text", 300), load(store, "unet", 400), load(store, "vae", 100)
    run_txt2img(text, unet, vae)
    assert card.out() == ["text"]  # unet needed room; text was least recently used; vae fit beside unet
    # text needs 300 next to unet+vae (500): unet (LRU) leaves; unet then needs 400 next to vae+text
    # (400): vae (LRU) and text leave; vae fits beside unet again.
    run_txt2img(text, unet, vae)
    assert card.out() == ["text", "unet", "vae", "text"]
    assert card.peak <= 600 and store.device_bytes() <= 600


def test_offload_on_leaves_after_each_use_and_off_never_leaves():
    store, card = make_store(budget=1000)
    text, unet = load(store, "text", 300, offload="on"), load(store, "unet", 400)
    run_txt2img(text, unet, load(store, "vae", 100))
    assert card.out() == ["text"]  # forced out right after encoding, though it fit
    store2, card2 = make_store(budget=500)
    pinned, other = load(store2, "text", 300, offload="off"), load(store2, "unet", 400)
    with pinned.use():
        pass
    with other.use():  # does not fit next to the pinned model: it is never the one to leave
        pass
    assert card2.out() == [] and {kind for kind, _ in card2.moves} == {"text", "unet"}


def test_models_in_use_are_not_moved_out():
    store, card = make_store(budget=500)
    vae, text = load(store, "vae", 300), load(store, "text", 300)
    with vae.use(), text.use():  # the trainer encodes images and prompts with both open
        assert card.out() == []
    assert card.peak == 600  # over the budget only because both are in use at once


def test_model_larger_than_the_budget_streams_after_emptying_the_card():
    store, card = make_store(budget=int(10 * GB))  # a 12 GB card: 10 GB for models
    # Full-size Kolors in fp16: ChatGLM3 12.5 GB, UNet 5.1 GB, VAE 0.17 GB.
    text, unet, vae = load(store, "text", int(12.5e9)), load(store, "unet", int(5.1e9)), load(store, "vae", int(0.17e9))
    run_txt2img(text, unet, vae)
    streamed = [e for e in store.loaded_models() if e.streaming]
    assert [e.kind for e in streamed] == ["text"]
    run_txt2img(text, unet, vae)
    assert ("text", "cuda") not in card.moves  # streamed from the host, never whole on the card
    assert card.out() == []  # UNet and VAE stay on the card between runs
    assert card.peak <= 8 * GB and store.device_bytes() == int(5.1e9) + int(0.17e9)


def test_peaks_never_exceed_the_budget_over_random_runs():
    rng = random.Random(0)
    store, card = make_store(budget=1000)
    handles = [load(store, f"m{i}", rng.randint(50, 600), family=rng.choice(["kolors", "sd"])) for i in range(8)]
    for _ in range(300):
        with rng.choice(handles).use():
            assert sum(card.on.values()) <= 1000
    assert card.peak <= 1000 and store.device_bytes() <= 1000


def test_cpu_models_are_never_moved():
    store, card = make_store(budget=1)
    handle = load(store, "unet", 500, device="cpu")
    with handle.use():
        pass
    assert card.moves == [] and store.device_bytes() == 0


def test_a_bad_offload_mode_is_refused():
    store, _ = make_store(budget=1000)
    with pytest.raises(ValueError, match="offload must be one of auto, on, off"):
        load(store, "unet", 10, offload="sometimes")
