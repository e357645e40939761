"""Applying LoRAs to the tiny Kolors UNet (graphgen_nodes.lora.apply)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from graphgen_nodes.lora.apply import applied_loras, loader_scale, strength_for
from graphgen_nodes.lora.convert import write_lora
from graphgen_nodes.lora.lora_file import LoraError, LoraModule, LoraWeights, read_lora

TOL = 1e-5

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_unet(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The tiny Kolors-topology UNet, seeded."""
    from diffusers import UNet2DConditionModel

    from graphgen.testing.tiny_kolors import TINY_UNET_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**TINY_UNET_CONFIG).eval().to(dtype)


def run(unet: nn.Module, seed: int = 1) -> torch.Tensor:
    """One UNet forward on fixed random inputs (8×8 latent, 7 text tokens)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = unet.dtype
    hidden = unet.config.encoder_hid_dim
    x = torch.randn(1, 4, 8, 8, generator=gen).to(dtype)
    text = torch.randn(1, 7, hidden, generator=gen).to(dtype)
    pooled = torch.randn(1, hidden, generator=gen).to(dtype)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]], dtype=dtype)
    with torch.no_grad():
        out = unet(
            x, 10, encoder_hidden_states=text, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        )
    return out.sample


def attention_paths(
    unet: nn.Module, leaves: Sequence[str] = ("to_q", "to_k", "to_v", "to_out.0")
) -> list[str]:
    """The tutorial's targets: q/k/v/out of every attention."""
    return [
        n
        for n, m in unet.named_modules()
        if isinstance(m, nn.Linear)
        and ".attentions." in n
        and n.endswith(tuple(f".{leaf}" for leaf in leaves))
    ]


def random_lora(
    unet: nn.Module,
    paths: Sequence[str],
    *,
    seed: int,
    rank: int | Sequence[int] = 4,
    alpha: float | None = None,
) -> LoraWeights:
    """A random LoRA whose update visibly changes the output (rank may vary per module)."""
    gen = torch.Generator().manual_seed(seed)
    modules = {}
    for i, path in enumerate(paths):
        linear = unet.get_submodule(path)
        r = rank if isinstance(rank, int) else rank[i % len(rank)]
        modules[path] = LoraModule(
            down=torch.randn(r, linear.in_features, generator=gen) * 0.2,
            up=torch.randn(linear.out_features, r, generator=gen) * 0.2,
            alpha=alpha,
        )
    return LoraWeights(modules, source=f"random-{seed}")


def merged_output(unet: nn.Module, loras: Sequence[tuple[LoraWeights, float]]) -> torch.Tensor:
    """Reference: the output of a deep copy with ``W += strength · alpha/rank · up @ down`` merged in fp32."""
    ref = copy.deepcopy(unet).float()
    with torch.no_grad():
        for lora, strength in loras:
            for path, module in lora.modules.items():
                ref.get_submodule(path).weight += strength * module.delta()
    return run(ref)


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return build_unet()


@pytest.fixture(scope="module")
def base(unet: nn.Module) -> torch.Tensor:
    return run(unet)


def test_every_layout_gives_the_same_output(unet: nn.Module, base: torch.Tensor, tmp_path: Path) -> None:
    paths = attention_paths(unet)
    trained = random_lora(unet, paths, seed=3, rank=4, alpha=2.0)  # scale 0.5
    raw = trained.with_alpha(None)  # what formats without alpha store for the same training
    expected = merged_output(unet, [(trained, 1.0)])
    assert (expected - base).abs().max() > 1e-2
    cases = {  # format: (LoRA written, strength that matches alpha / rank = 0.5)
        "kohya": (trained, 1.0),
        "kohya_diffusers": (trained, 1.0),
        "diffusers": (trained, 1.0),
        "peft": (trained, 1.0),
        "diffusers_legacy": (raw, 0.5),
        "diffusers_attn_procs": (raw, 0.5),
        "diffsynth": (raw, 0.5),
    }
    for fmt, (lora, strength) in cases.items():
        path = write_lora(lora, tmp_path / f"{fmt}.lora", to=fmt)
        loaded = read_lora(path)
        assert loaded.format == fmt
        with applied_loras(unet, [(loaded, strength)]) as report:
            out = run(unet)
        assert report.modules_applied == len(paths) and report.unmatched == []
        torch.testing.assert_close(out, expected, rtol=0, atol=TOL, msg=fmt)
    assert torch.equal(run(unet), base)


def test_exit_restores_the_base_bit_exactly(unet: nn.Module, base: torch.Tensor) -> None:
    lora = random_lora(unet, attention_paths(unet), seed=4)
    modules_before = dict(unet.named_modules())
    params_before = {k: v.clone() for k, v in unet.state_dict().items()}
    with applied_loras(unet, [(lora, 0.8)]) as report:
        inside = run(unet)
    assert report.modules_applied == len(lora.modules)
    assert not torch.equal(inside, base)
    assert torch.equal(run(unet), base)
    assert dict(unet.named_modules()) == modules_before  # the very same module objects
    state = unet.state_dict()
    assert state.keys() == params_before.keys()
    assert all(torch.equal(state[k], v) for k, v in params_before.items())

    with pytest.raises(RuntimeError, match="boom"), applied_loras(unet, [(lora, 1.0)]):
        raise RuntimeError("boom")
    assert torch.equal(run(unet), base)


def test_stacked_pair_equals_the_sum(unet: nn.Module, base: torch.Tensor) -> None:
    a = random_lora(unet, attention_paths(unet), seed=5, rank=(2, 4, 3), alpha=1.0)
    b = random_lora(unet, attention_paths(unet, ("to_q", "to_v")), seed=6, rank=8, alpha=16.0)
    with applied_loras(unet, [(a, 0.7), (b, -0.4)]) as report:
        stacked = run(unet)
    assert report.modules_applied == len(a.modules)
    assert [entry.modules for entry in report.loras] == [len(a.modules), len(b.modules)]
    torch.testing.assert_close(stacked, merged_output(unet, [(a, 0.7), (b, -0.4)]), rtol=0, atol=TOL)

    # one LoRA of rank r_a + r_b holding both updates gives the same output
    joined = {}
    for path, ma in a.modules.items():
        downs, ups = [ma.down], [ma.up * (0.7 * ma.scale)]
        if path in b.modules:
            mb = b.modules[path]
            downs.append(mb.down)
            ups.append(mb.up * (-0.4 * mb.scale))
        joined[path] = LoraModule(torch.cat(downs), torch.cat(ups, dim=1))
    with applied_loras(unet, [(LoraWeights(joined), 1.0)]):
        single = run(unet)
    torch.testing.assert_close(stacked, single, rtol=0, atol=TOL)

    # the same LoRA listed twice sums its strengths; strength 0 patches nothing
    with applied_loras(unet, [(a, 0.3), (a, 0.4), (b, 0.0)]) as report:
        twice = run(unet)
    assert report.loras[0].strength == pytest.approx(0.7) and report.loras[1].modules == 0
    torch.testing.assert_close(twice, merged_output(unet, [(a, 0.7)]), rtol=0, atol=TOL)
    assert torch.equal(run(unet), base)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_unets(dtype: torch.dtype) -> None:
    unet = build_unet(dtype=dtype)
    base = run(unet)
    lora = random_lora(unet, attention_paths(unet), seed=7, alpha=2.0)
    with applied_loras(unet, [(lora, 1.0)]):
        out = run(unet)
    assert out.dtype == dtype
    assert torch.equal(run(unet), base)
    assert all(p.dtype == dtype for p in unet.parameters())
    expected = merged_output(unet, [(lora, 1.0)])
    effect = (expected - base.float()).abs().max()
    assert effect > 0.05
    assert (out.float() - expected).abs().max() < 0.1 * effect


@pytest.mark.parametrize("backup", ["device", "cpu"])
def test_backups_and_repeated_use(unet: nn.Module, base: torch.Tensor, backup: str) -> None:
    lora = random_lora(unet, attention_paths(unet), seed=8)
    params = {name: (p, p.detach().clone()) for name, p in unet.named_parameters()}
    rng = torch.get_rng_state()
    with applied_loras(unet, [(lora, 1.0)], backup=backup):
        first = run(unet)
    with applied_loras(unet, [(lora, 0.5)], backup=backup):
        half = run(unet)
    with applied_loras(unet, [(lora, 1.0)], backup=backup):
        again = run(unet)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first, again) and not torch.equal(first, half)
    torch.testing.assert_close(half, merged_output(unet, [(lora, 0.5)]), rtol=0, atol=TOL)
    for name, p in unet.named_parameters():  # the same Parameter objects, the same bits
        assert p is params[name][0] and torch.equal(p, params[name][1])
    assert torch.equal(run(unet), base)


def test_not_reentrant(unet: nn.Module) -> None:
    lora = random_lora(unet, attention_paths(unet)[:2], seed=10)
    with applied_loras(unet, lora), pytest.raises(LoraError, match="already inside"):
        with applied_loras(unet, lora):
            pass


def test_text_encoder_keys_are_reported_not_fatal(unet: nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    lora = random_lora(unet, attention_paths(unet), seed=11, alpha=2.0)
    path = write_lora(lora, tmp_path / "unet_only.safetensors", to="kohya")
    state = load_file(str(path))
    state["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = torch.randn(4, 768)
    state["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = torch.randn(768, 4)
    state["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha"] = torch.tensor(4.0)
    save_file(state, str(tmp_path / "sdxl_style.safetensors"))
    loaded = read_lora(tmp_path / "sdxl_style.safetensors")
    with applied_loras(unet, [(loaded, 1.0)]) as report:
        out = run(unet)
    assert report.modules_applied == len(lora.modules)
    assert sorted(report.unmatched) == sorted(k for k in state if k.startswith("lora_te"))
    assert any("text-encoder" in w and "CLIP" in w for w in report.warnings)
    torch.testing.assert_close(out, merged_output(unet, [(lora, 1.0)]), rtol=0, atol=TOL)


def test_lora_matching_nothing_raises(unet: nn.Module, base: torch.Tensor) -> None:
    foreign = LoraWeights(
        {
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": LoraModule(
                torch.ones(2, 32), torch.ones(32, 2)
            )
        },
        source="sd15.safetensors",
    )  # level 0 has no attention in Kolors
    with (
        pytest.raises(LoraError, match="sd15.safetensors: none of its 1 modules"),
        applied_loras(unet, foreign),
    ):
        pass
    path = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"  # in = cross_attention_dim 16
    wrong = LoraWeights({path: LoraModule(torch.ones(2, 768), torch.ones(64, 2))}, source="sd15.safetensors")
    with (
        pytest.raises(LoraError, match="attn2.to_k is Linear.*another base model"),
        applied_loras(unet, wrong),
    ):
        pass
    assert torch.equal(run(unet), base)


def test_tutorial_strengths_are_reproducible(unet: nn.Module, base: torch.Tensor, tmp_path: Path) -> None:
    assert loader_scale("as_trained", 16, alpha=4.0) == 0.25
    assert loader_scale("tutorial_notebook", 16) == 0.125
    assert loader_scale("comfyui_kolors", 16) == 0.125
    assert loader_scale("diffsynth", 16) == 1.0

    trained = random_lora(unet, attention_paths(unet), seed=12, rank=16, alpha=4.0)
    ckpt = write_lora(trained.with_alpha(None), tmp_path / "epoch=0-step=500.ckpt", to="diffsynth")
    lora = read_lora(ckpt)  # what the tutorial produced: rank 16, no alpha stored
    assert lora.format == "diffsynth" and lora.ranks == {16}
    expected = {"as_trained": 0.25, "tutorial_notebook": 0.125, "comfyui_kolors": 0.125, "diffsynth": 1.0}
    strengths = {c: strength_for(lora, c, alpha=4.0 if c == "as_trained" else None) for c in expected}
    assert strengths == expected
    with pytest.raises(LoraError, match="training alpha"):
        strength_for(lora, "as_trained")

    with applied_loras(unet, [(lora, strengths["as_trained"])]):
        as_trained = run(unet)
    torch.testing.assert_close(as_trained, merged_output(unet, [(trained, 1.0)]), rtol=0, atol=TOL)
    with applied_loras(unet, [(lora, strengths["tutorial_notebook"])]):
        notebook = run(unet)
    torch.testing.assert_close(notebook, merged_output(unet, [(trained, 0.5)]), rtol=0, atol=TOL)

    # a file that stores the training alpha (kohya/peft) is at its trained scale at strength 1
    kohya = read_lora(write_lora(read_lora(ckpt, lora_alpha=4.0), tmp_path / "t.safetensors", to="kohya"))
    assert strength_for(kohya, "as_trained") == 1.0
    assert strength_for(kohya, "diffsynth") == 4.0
    with applied_loras(unet, [(kohya, 1.0)]):
        torch.testing.assert_close(run(unet), as_trained, rtol=0, atol=TOL)
