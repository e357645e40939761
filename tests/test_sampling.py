"""Scheduler table and the sampling loop: seeds, callbacks, guidance, img2img edge cases, dtypes."""

from __future__ import annotations

import copy

import pytest
import torch

from graphgen_nodes.diffusion.schedulers import (
    SCHEDULER_ALIASES,
    SCHEDULERS,
    make_scheduler,
    resolve_scheduler_name,
)
from graphgen_nodes.kolors.encode import encode_prompts
from graphgen_nodes.kolors.sampling import MAX_SEED, make_generator, sample

SIZE = dict(width=64, height=64)


@pytest.fixture(scope="module")
def conds(tiny_components):
    c = tiny_components
    return (
        encode_prompts(c.text_encoder, c.tokenizer, ["a red car at night"]),
        encode_prompts(c.text_encoder, c.tokenizer, [""]),
    )


# ------------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("name", list(SCHEDULERS) + list(SCHEDULER_ALIASES))
def test_every_scheduler_uses_kolors_config(name):
    sched = make_scheduler(name)
    cfg = sched.config
    assert cfg.num_train_timesteps == 1100
    assert cfg.beta_end == 0.014 and cfg.beta_start == 0.00085
    assert cfg.beta_schedule == "scaled_linear" and cfg.prediction_type == "epsilon"
    assert cfg.timestep_spacing == "leading" and cfg.steps_offset == 1
    assert type(sched).__name__ == SCHEDULERS[resolve_scheduler_name(name)].class_name
    sched.set_timesteps(4)
    assert len(sched.timesteps) == 4


def test_scheduler_variants():
    assert make_scheduler("dpmpp_2m").config.algorithm_type == "dpmsolver++"
    assert not make_scheduler("dpmpp_2m").config.use_karras_sigmas
    assert make_scheduler("dpmpp_2m_karras").config.use_karras_sigmas
    sde = make_scheduler("DPMSolverMultistepScheduler_SDE_karras")
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_karras_sigmas
    assert resolve_scheduler_name("EulerDiscreteScheduler") == "euler"


def test_unknown_scheduler_lists_valid_names():
    with pytest.raises(ValueError) as info:
        make_scheduler("heun_magic")
    message = str(info.value)
    assert "heun_magic" in message and "dpmpp_2m_karras" in message and "UniPCMultistepScheduler" in message


def test_base_config_is_respected_and_class_name_ignored():
    base = {**make_scheduler("euler").config, "_class_name": "EulerDiscreteScheduler", "beta_end": 0.02}
    sched = make_scheduler("ddim", base)
    assert type(sched).__name__ == "DDIMScheduler" and sched.config.beta_end == 0.02


# --------------------------------------------------------------------------------- sampling


def test_seed_determinism(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    run = dict(steps=3, cfg=5.0, **SIZE)
    a = sample(c.unet, "euler", pos, neg, seed=42, **run)
    b = sample(c.unet, "euler", pos, neg, seed=42, **run)
    d = sample(c.unet, "euler", pos, neg, seed=43, **run)
    assert a.shape == (1, 4, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert (a - d).abs().max() > 1e-2


def test_64_bit_seeds(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    assert make_generator(MAX_SEED).initial_seed() == MAX_SEED
    # The seed is torch's generator seed, unchanged: same first draw as a hand-seeded generator.
    ours = torch.randn(3, generator=make_generator(2**63 + 5))
    assert torch.equal(ours, torch.randn(3, generator=torch.Generator().manual_seed(2**63 + 5)))
    hi = sample(c.unet, "euler", pos, neg, seed=MAX_SEED, steps=2, cfg=5.0, **SIZE)
    lo = sample(c.unet, "euler", pos, neg, seed=0, steps=2, cfg=5.0, **SIZE)
    assert torch.isfinite(hi).all() and not torch.equal(hi, lo)
    for bad in (-1, MAX_SEED + 1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            sample(c.unet, "euler", pos, neg, seed=bad, steps=2, cfg=5.0, **SIZE)


def test_progress_called_each_step(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    calls: list[tuple[int, int]] = []
    sample(
        c.unet,
        "dpmpp_2m",
        pos,
        neg,
        seed=1,
        steps=4,
        cfg=5.0,
        progress=lambda i, n: calls.append((i, n)),
        **SIZE,
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_stops_at_a_step(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds

    class Stop(BaseException):
        pass

    checks = {"n": 0}
    done: list[int] = []

    def check() -> None:
        checks["n"] += 1
        if checks["n"] == 3:
            raise Stop

    with pytest.raises(Stop):
        sample(
            c.unet, "euler", pos, neg, seed=1, steps=5, cfg=5.0,
            progress=lambda i, n: done.append(i), check_cancelled=check, **SIZE,
        )  # fmt: skip
    assert done == [1, 2]


def _unet_batches(unet):
    seen: list[int] = []
    handle = unet.register_forward_pre_hook(lambda mod, args: seen.append(int(args[0].shape[0])))
    return seen, handle


def test_cfg_one_skips_the_unconditional_pass(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    seen, handle = _unet_batches(c.unet)
    try:
        no_cfg = sample(c.unet, "euler", pos, None, seed=3, steps=2, cfg=1.0, **SIZE)
        assert seen == [1, 1]
        seen.clear()
        sample(c.unet, "euler", pos, neg, seed=3, steps=2, cfg=5.0, **SIZE)
        assert seen == [2, 2]
    finally:
        handle.remove()
    # With cfg 1 the negative prompt does not matter.
    assert torch.equal(no_cfg, sample(c.unet, "euler", pos, neg, seed=3, steps=2, cfg=1.0, **SIZE))
    with pytest.raises(ValueError, match="negative"):
        sample(c.unet, "euler", pos, None, seed=3, steps=2, cfg=5.0, **SIZE)


def test_batch_rows_differ_and_negative_broadcasts(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    out = sample(c.unet, "euler_ancestral", pos, neg, seed=9, steps=2, cfg=4.0, batch_size=3, **SIZE)
    assert out.shape == (3, 4, 8, 8)
    assert not torch.equal(out[0], out[1])
    two = encode_prompts(c.text_encoder, c.tokenizer, ["a", "b"])
    assert sample(c.unet, "euler", two, neg, seed=9, steps=1, cfg=4.0, batch_size=2, **SIZE).shape[0] == 4


def test_scheduler_object_is_not_mutated(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    sched = copy.deepcopy(c.scheduler)
    by_obj = sample(c.unet, sched, pos, neg, seed=5, steps=2, cfg=5.0, **SIZE)
    assert sched.num_inference_steps is None
    assert torch.equal(by_obj, sample(c.unet, "euler", pos, neg, seed=5, steps=2, cfg=5.0, **SIZE))


def test_img2img_edge_cases(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    same = sample(c.unet, "euler", pos, neg, seed=1, steps=4, cfg=5.0, latents_in=latents, denoise=0.1)
    assert torch.equal(same, latents)  # int(4 * 0.1) == 0 steps: nothing to do
    calls: list[int] = []
    out = sample(
        c.unet, "euler", pos, neg, seed=1, steps=4, cfg=5.0, latents_in=latents, denoise=0.5,
        progress=lambda i, n: calls.append(n),
    )  # fmt: skip
    assert out.shape == latents.shape and calls == [2, 2]
    with pytest.raises(ValueError, match="input latents"):
        sample(c.unet, "euler", pos, neg, seed=1, steps=4, cfg=5.0, denoise=0.5, **SIZE)
    with pytest.raises(ValueError, match="do not match"):
        sample(c.unet, "euler", pos, neg, seed=1, steps=4, cfg=5.0, latents_in=latents, width=128)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample(c.unet, "euler", pos, neg, seed=1, steps=4, cfg=5.0, width=60, height=64)


def test_bf16_unet_runs_in_its_dtype_with_fp32_latents(tiny_components, conds):
    c, (pos, neg) = tiny_components, conds
    unet16 = copy.deepcopy(c.unet).to(torch.bfloat16)
    seen: list[torch.dtype] = []
    handle = unet16.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    try:
        low = sample(unet16, "euler", pos, neg, seed=11, steps=3, cfg=5.0, **SIZE)
    finally:
        handle.remove()
    ref = sample(c.unet, "euler", pos, neg, seed=11, steps=3, cfg=5.0, **SIZE)
    assert seen == [torch.bfloat16] * 3
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    # Same image up to bf16 rounding.
    assert torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0) > 0.99
