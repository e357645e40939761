"""encode_prompts + sample + decode equal diffusers' KolorsPipeline / KolorsImg2ImgPipeline.

The pipelines get ``generator=torch.Generator("cpu").manual_seed(seed)``; our functions get the
bare ``seed``. No ``latents=`` is passed to the text-to-image pipeline: the equality shows that our
seed → noise mapping (and the per-step noise of stochastic schedulers) is the pipeline's.

Img2img: the pipeline is given our scaled latents as ``image`` (a 4-channel tensor is taken as
latents as-is), so that its generator only draws the noise, as ours does. It is also given
``height``/``width``: ``KolorsImg2ImgPipeline`` computes its time ids from those arguments
(default 1024) before it looks at the image, while we use the image's real size.
"""

from __future__ import annotations

import pytest
import torch

from graphgen_nodes.diffusion.schedulers import make_scheduler
from graphgen_nodes.diffusion.vae_ops import decode, encode
from graphgen_nodes.kolors.encode import encode_prompts
from graphgen_nodes.kolors.sampling import sample

PROMPT = "一只可爱的小猫坐在木桌上, a photo"
NEGATIVE = "丑陋、变形、嘈杂、模糊、低对比度"
SEED = 20240706
TOL = 1e-4


def _pipe(cls, c, scheduler_name: str):
    pipe = cls(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=make_scheduler(scheduler_name),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ours(c, scheduler_name, prompts, negatives, **kwargs):
    pos = encode_prompts(c.text_encoder, c.tokenizer, prompts)
    neg = encode_prompts(c.text_encoder, c.tokenizer, negatives)
    latents = sample(c.unet, scheduler_name, pos, neg, seed=SEED, **kwargs)
    return decode(c.vae, latents).images


def _as_bhwc(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1).float()


@pytest.mark.parametrize(
    "scheduler_name", ["euler", "dpmpp_2m_karras", "euler_ancestral", "dpmpp_2m_sde_karras"]
)
def test_text_to_image_equals_kolors_pipeline(tiny_components, scheduler_name):
    from diffusers import KolorsPipeline

    c = tiny_components
    ref = _pipe(KolorsPipeline, c, scheduler_name)(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=4,
        guidance_scale=5.0,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="pt",
    ).images
    ours = _ours(c, scheduler_name, [PROMPT], [NEGATIVE], steps=4, cfg=5.0, width=64, height=64)
    assert ours.shape == (1, 64, 64, 3)
    assert (ours - _as_bhwc(ref)).abs().max() <= TOL
    assert ours.std() > 0.01  # a real image, not a constant


def test_batch_of_prompts_and_images_per_prompt(tiny_components):
    from diffusers import KolorsPipeline

    c = tiny_components
    prompts, negatives = ["a red car at night", PROMPT], ["", NEGATIVE]
    ref = _pipe(KolorsPipeline, c, "unipc")(
        prompts,
        negative_prompt=negatives,
        num_images_per_prompt=2,
        num_inference_steps=3,
        guidance_scale=4.0,
        height=64,
        width=48,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="pt",
    ).images
    ours = _ours(c, "unipc", prompts, negatives, steps=3, cfg=4.0, width=48, height=64, batch_size=2)
    assert ours.shape == (4, 64, 48, 3)
    assert (ours - _as_bhwc(ref)).abs().max() <= TOL


def test_cfg_one_equals_pipeline_without_guidance(tiny_components):
    from diffusers import KolorsPipeline

    c = tiny_components
    ref = _pipe(KolorsPipeline, c, "euler")(
        PROMPT,
        num_inference_steps=3,
        guidance_scale=1.0,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="pt",
    ).images
    pos = encode_prompts(c.text_encoder, c.tokenizer, [PROMPT])
    latents = sample(c.unet, "euler", pos, None, seed=SEED, steps=3, cfg=1.0, width=64, height=64)
    assert (decode(c.vae, latents).images - _as_bhwc(ref)).abs().max() <= TOL


@pytest.mark.parametrize("scheduler_name", ["euler", "dpmpp_2m"])
def test_img2img_equals_kolors_img2img_pipeline(tiny_components, scheduler_name):
    from diffusers import KolorsImg2ImgPipeline

    c = tiny_components
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    init = encode(c.vae, image)
    ref = _pipe(KolorsImg2ImgPipeline, c, scheduler_name)(
        PROMPT,
        image=init.clone(),
        negative_prompt=NEGATIVE,
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=5.0,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(SEED),
        output_type="pt",
    ).images
    steps_seen: list[int] = []
    ours = _ours(
        c, scheduler_name, [PROMPT], [NEGATIVE],
        steps=5, cfg=5.0, latents_in=init, denoise=0.6, progress=lambda i, n: steps_seen.append(n),
    )  # fmt: skip
    assert steps_seen == [3, 3, 3]  # int(5 * 0.6) steps of the 5-step schedule
    assert (ours - _as_bhwc(ref)).abs().max() <= TOL
