"""encode_prompts: the same tensors as KolorsPipeline.encode_prompt, and the batch helpers."""

from __future__ import annotations

import pytest
import torch

from graphgen_nodes.kolors.encode import (
    Conditioning,
    concat_conditioning,
    encode_prompts,
    repeat_conditioning,
)

PROMPTS = ["a photo of a cat sitting on a wooden table", "一只可爱的小猫坐在木桌上"]
NEGATIVES = ["ugly, deformed, blurry", "丑陋、变形、嘈杂、模糊、低对比度"]


@pytest.fixture(scope="module")
def pipe(tiny_components):
    from diffusers import KolorsPipeline

    c = tiny_components
    return KolorsPipeline(
        vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet, scheduler=c.scheduler
    )


def test_matches_pipeline_encode_prompt_bit_for_bit(tiny_components, pipe):
    c = tiny_components
    with torch.no_grad():
        ref_pos, ref_neg, ref_pooled, ref_neg_pooled = pipe.encode_prompt(
            PROMPTS, device=torch.device("cpu"), negative_prompt=NEGATIVES
        )
    pos = encode_prompts(c.text_encoder, c.tokenizer, PROMPTS)
    neg = encode_prompts(c.text_encoder, c.tokenizer, NEGATIVES)
    assert pos.embeds.shape == (2, 256, c.text_encoder.config.hidden_size)
    assert pos.pooled.shape == (2, c.text_encoder.config.hidden_size)
    assert torch.equal(pos.embeds, ref_pos)
    assert torch.equal(pos.pooled, ref_pooled)
    assert torch.equal(neg.embeds, ref_neg)
    assert torch.equal(neg.pooled, ref_neg_pooled)
    # Chinese and English prompts give different, finite conditioning.
    assert torch.isfinite(pos.embeds).all()
    assert not torch.allclose(pos.embeds[0], pos.embeds[1])


def test_layers_penultimate_and_pooled_before_final_norm(tiny_components):
    c = tiny_components
    cond = encode_prompts(c.text_encoder, c.tokenizer, PROMPTS[:1])
    inputs = c.tokenizer(
        PROMPTS[:1], padding="max_length", max_length=256, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        out = c.text_encoder(**inputs, output_hidden_states=True)
    assert torch.equal(cond.embeds[0], out.hidden_states[-2][:, 0])
    assert torch.equal(cond.pooled[0], out.hidden_states[-1][-1, 0])
    # The final layer norm output is a different tensor: the pooled vector must not be it.
    assert not torch.allclose(cond.pooled[0], out.last_hidden_state[-1, 0])
    # Left padding: the last position is the last real token, padding is at the start.
    assert inputs["attention_mask"][0, -1] == 1 and inputs["attention_mask"][0, 0] == 0


def test_pooled_does_not_depend_on_batch_partners(tiny_components):
    """With left padding the last position is a real token whatever the other prompts' lengths."""
    c = tiny_components
    alone = encode_prompts(c.text_encoder, c.tokenizer, ["a cat"])
    batched = encode_prompts(c.text_encoder, c.tokenizer, ["a cat", PROMPTS[0] * 3])
    torch.testing.assert_close(batched.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)


def test_empty_negative_is_encoded_not_zeroed(tiny_components, pipe):
    c = tiny_components
    neg = encode_prompts(c.text_encoder, c.tokenizer, [""])
    assert neg.embeds.abs().sum() > 0 and neg.pooled.abs().sum() > 0
    with torch.no_grad():
        _, ref_neg, _, ref_neg_pooled = pipe.encode_prompt(
            "x", device=torch.device("cpu"), negative_prompt=""
        )
    assert torch.equal(neg.embeds, ref_neg) and torch.equal(neg.pooled, ref_neg_pooled)


def test_truncation_is_flagged(tiny_components):
    c = tiny_components
    cond = encode_prompts(c.text_encoder, c.tokenizer, ["short", "word " * 400])
    assert cond.truncated == [False, True]
    assert len(cond.warnings) == 1 and "prompt 1" in cond.warnings[0]
    assert cond.embeds.shape[1] == 256


def test_single_string_and_errors(tiny_components):
    c = tiny_components
    assert encode_prompts(c.text_encoder, c.tokenizer, "a cat").batch_size == 1
    with pytest.raises(ValueError, match="at least one"):
        encode_prompts(c.text_encoder, c.tokenizer, [])
    with pytest.raises(ValueError, match="max_length"):
        encode_prompts(c.text_encoder, c.tokenizer, ["a"], max_length=300)
    with pytest.raises(ValueError, match="batch sizes differ"):
        Conditioning(embeds=torch.zeros(2, 4, 3), pooled=torch.zeros(1, 3))


def test_repeat_matches_num_images_per_prompt(tiny_components, pipe):
    c = tiny_components
    with torch.no_grad():
        ref_pos, _, ref_pooled, _ = pipe.encode_prompt(
            PROMPTS, device=torch.device("cpu"), num_images_per_prompt=3, negative_prompt=NEGATIVES
        )
    rep = repeat_conditioning(encode_prompts(c.text_encoder, c.tokenizer, PROMPTS), 3)
    assert rep.batch_size == 6
    assert rep.prompts == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert torch.equal(rep.embeds, ref_pos) and torch.equal(rep.pooled, ref_pooled)
    with pytest.raises(ValueError):
        repeat_conditioning(rep, 0)


def test_concat(tiny_components):
    c = tiny_components
    a = encode_prompts(c.text_encoder, c.tokenizer, PROMPTS[:1])
    b = encode_prompts(c.text_encoder, c.tokenizer, ["word " * 400])
    both = concat_conditioning([a, b])
    assert both.batch_size == 2 and both.truncated == [False, True] and len(both.warnings) == 1
    assert torch.equal(both.embeds[1], b.embeds[0])
