"""The engine's model store (`graphgen.models.store`): one RAM budget across families, LRU order,
accounting, and eviction that really frees (handles hold keys, not modules)."""

from __future__ import annotations

import gc
import weakref

import torch

from graphgen import Engine
from graphgen.models import ModelStore, model_store
from graphgen.resources import ResourceCache


def linear(nbytes: int) -> torch.nn.Module:
    """A real (allocated) fp32 module of `nbytes`, so that freeing it can be observed."""
    return torch.nn.Linear(nbytes // 4, 1, bias=False)


def load(store: ModelStore, family: str, kind: str, nbytes: int, made: list | None = None):
    def loader():
        module = linear(nbytes)
        if made is not None:
            made.append(weakref.ref(module))
        return module

    return store.load(family=family, kind=kind, source=f"/nowhere/{family}/{kind}", device=torch.device("cpu"),
                      dtype=torch.float32, loader=loader)


def test_two_families_under_a_small_budget_evict_in_lru_order_and_account_exactly():
    store = ModelStore(max_bytes=4000)
    kolors_unet = load(store, "kolors", "unet", 1600)
    sd_unet = load(store, "sd", "unet", 1600)
    kolors_vae = load(store, "kolors", "vae", 400)
    assert store.nbytes == 3600 and store.loads == 3
    with kolors_unet.use():  # now the most recently used
        pass
    sd_vae = load(store, "sd", "vae", 800)  # 4400 > 4000: the least recently used (sd unet) goes
    assert [(e.family, e.kind) for e in store.loaded_models()] == [
        ("kolors", "vae"), ("kolors", "unet"), ("sd", "vae")]
    assert store.nbytes == 1600 + 400 + 800 == sum(e.nbytes for e in store.loaded_models())
    assert sd_unet.model is not None  # used again: reloaded; the LRU (kolors vae) makes room
    assert store.loads == 5
    assert [(e.family, e.kind) for e in store.loaded_models()] == [("kolors", "unet"), ("sd", "vae"), ("sd", "unet")]
    assert store.nbytes == 4000
    assert sd_vae.key != kolors_vae.key  # families never share entries, even for the same kind


def test_an_evicted_model_is_freed_although_its_handle_is_still_held():
    store = ModelStore(max_bytes=2000)
    made: list[weakref.ref] = []
    first = load(store, "kolors", "unet", 1600, made)  # the handle stays alive, as in the output cache
    assert made[0]() is first.model
    load(store, "sd", "unet", 1600)  # evicts the first
    gc.collect()
    assert made[0]() is None  # really released: no handle, cache entry or residency list keeps it
    again = first.model  # the handle still works: the model is loaded again from its recipe
    assert len(made) == 2 and again is made[1]()


def test_a_model_in_use_is_not_dropped_by_the_ram_budget():
    store = ModelStore(max_bytes=2000)
    made: list[weakref.ref] = []
    busy = load(store, "kolors", "unet", 1600, made)
    with busy.use() as module:
        load(store, "sd", "unet", 1600)  # over budget, but the busy model stays
        assert busy.key in store and store.nbytes == 3200 and made[0]() is module
    del module
    load(store, "sd", "vae", 400)  # over budget again: now the least recently used, it goes
    assert busy.key not in store and store.nbytes == 2000
    gc.collect()
    assert made[0]() is None


def test_free_resources_releases_models_and_empties_the_device_cache(monkeypatch, tmp_path):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    engine = Engine(output_dir=tmp_path)
    assert engine.models is engine.resources
    made: list[weakref.ref] = []
    handle = load(engine.models, "kolors", "vae", 400, made)
    assert engine.free_resources() == 1
    assert made[0]() is None and emptied == [True] and engine.models.nbytes == 0
    assert handle.model is made[-1]()  # a handle kept by an app loads the model again


def test_a_hand_built_resource_cache_gets_one_store():
    resources = ResourceCache()
    assert model_store(resources) is model_store(resources)
    assert isinstance(model_store(resources), ModelStore)


def test_a_cached_loader_output_does_not_keep_an_evicted_model_alive(tiny_models, tmp_path):
    from graphgen import WorkflowBuilder

    def vae_workflow(path):
        b = WorkflowBuilder()
        vae = b.add("KolorsVAELoader", id="vae", path=str(path), precision="fp32", device="cpu")
        b.add("PreviewImage", images=b.add("VAEDecode", samples=b.add("EmptyLatentImage", width=64, height=64),
                                             vae=vae))
        return b.build()

    probe = Engine(output_dir=tmp_path / "probe")
    one_vae = probe.run(vae_workflow(tiny_models.tutorial_fp16_vae)).output("vae", "vae").resource_nbytes()
    engine = Engine(output_dir=tmp_path, resource_bytes=int(one_vae * 1.5))  # room for one VAE
    first = engine.run(vae_workflow(tiny_models.tutorial_fp16_vae))
    module = weakref.ref(first.output("vae", "vae").model)
    engine.run(vae_workflow(tiny_models.diffusers_root))  # a second VAE: the first is evicted
    gc.collect()
    assert module() is None  # freed, although the first run's outputs (its handle) stay cached
    again = engine.run(vae_workflow(tiny_models.tutorial_fp16_vae))
    assert "vae" in again.cached  # the cached handle was reused; it reloads its model on use
    assert again.output("vae", "vae").model is not None
