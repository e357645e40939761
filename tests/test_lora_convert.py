"""Writing / converting LoRAs (graphgen_nodes.lora.convert) and interop with diffusers' loader."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from graphgen_nodes.lora.apply import applied_loras
from graphgen_nodes.lora.convert import WRITE_FORMATS, convert_lora, lora_to_state_dict, write_lora
from graphgen_nodes.lora.formats import LAYOUTS
from graphgen_nodes.lora.lora_file import LoraError, LoraModule, LoraWeights, read_lora

TOL = 1e-5
ALPHA_FORMATS = [f for f in WRITE_FORMATS if LAYOUTS[f].stores_alpha]
NO_ALPHA_FORMATS = [f for f in WRITE_FORMATS if not LAYOUTS[f].stores_alpha]

# tiny models run faster single-threaded on a shared 2-core machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build_unet(seed: int = 0) -> nn.Module:
    from diffusers import UNet2DConditionModel

    from graphgen.testing.tiny_kolors import TINY_UNET_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**TINY_UNET_CONFIG).eval()


def run(unet: nn.Module) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    hidden = unet.config.encoder_hid_dim
    x, text, pooled = (
        torch.randn(1, 4, 8, 8, generator=gen),
        torch.randn(1, 7, hidden, generator=gen),
        torch.randn(1, hidden, generator=gen),
    )
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]])
    with torch.no_grad():
        return unet(
            x, 10, encoder_hidden_states=text, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}
        ).sample


def random_lora(
    unet: nn.Module, *, seed: int, leaves: tuple[str, ...], alphas: tuple[float | None, ...]
) -> LoraWeights:
    """Mixed ranks (2/4/3) and alphas cycling through ``alphas``."""
    gen = torch.Generator().manual_seed(seed)
    paths = [
        n
        for n, m in unet.named_modules()
        if isinstance(m, nn.Linear) and ".attentions." in n and n.endswith(leaves)
    ]
    modules = {}
    for i, path in enumerate(sorted(paths)):
        linear, r = unet.get_submodule(path), (2, 4, 3)[i % 3]
        modules[path] = LoraModule(
            torch.randn(r, linear.in_features, generator=gen) * 0.2,
            torch.randn(linear.out_features, r, generator=gen) * 0.2,
            alphas[i % len(alphas)],
        )
    return LoraWeights(modules, source=f"random-{seed}", metadata={"ss_output_name": "kolors-test"})


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    return build_unet()


QKVO = (".to_q", ".to_k", ".to_v", ".to_out.0")
ALL_ATTN = (*QKVO, ".proj_in", ".proj_out", ".ff.net.0.proj", ".ff.net.2")


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_each_format_round_trips_exactly(unet: nn.Module, fmt: str, tmp_path: Path) -> None:
    leaves = QKVO if fmt == "diffusers_attn_procs" else ALL_ATTN
    alphas = (2.0, 8.0, 2.5) if fmt in ALPHA_FORMATS else (None,)
    lora = random_lora(unet, seed=1, leaves=leaves, alphas=alphas)
    path = write_lora(lora, tmp_path / f"lora.{fmt}", to=fmt)
    back = read_lora(path)
    assert back.format == fmt
    assert back.same_weights(lora)
    assert back.unmatched == []
    if LAYOUTS[fmt].container == "safetensors":  # a pickled DiffSynth .ckpt has no metadata
        assert back.metadata["ss_output_name"] == "kolors-test"


@pytest.mark.parametrize("fmt", NO_ALPHA_FORMATS)
def test_formats_without_alpha_fold_it_into_up(unet: nn.Module, fmt: str, tmp_path: Path) -> None:
    lora = random_lora(unet, seed=2, leaves=QKVO, alphas=(2.0, 8.0))
    back = read_lora(write_lora(lora, tmp_path / "folded", to=fmt))
    assert all(m.alpha is None for m in back.modules.values())
    for path, module in lora.modules.items():
        torch.testing.assert_close(back.modules[path].delta(), module.delta(), rtol=1e-6, atol=1e-7)


def test_write_is_atomic_and_refuses_to_overwrite(unet: nn.Module, tmp_path: Path) -> None:
    lora = random_lora(unet, seed=3, leaves=QKVO, alphas=(4.0,))
    target = tmp_path / "out" / "style.safetensors"
    write_lora(lora, target)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_lora(lora.with_alpha(1.0), target)
    assert target.read_bytes() == before
    write_lora(lora.with_alpha(1.0), target, overwrite=True)
    assert read_lora(target).same_weights(lora.with_alpha(1.0))
    assert [p.name for p in target.parent.iterdir()] == ["style.safetensors"]  # no temp files left
    with pytest.raises(LoraError, match="unknown LoRA format"):
        write_lora(lora, tmp_path / "x.safetensors", to="comfy")


def test_metadata_written(unet: nn.Module) -> None:
    lora = random_lora(unet, seed=4, leaves=QKVO, alphas=(4.0,))
    lora.metadata["lora_adapter_metadata"] = '{"stale": true}'
    _, kohya = lora_to_state_dict(lora, "kohya", metadata={"note": "hi"})
    assert kohya["ss_network_alpha"] == "4" and kohya["ss_network_dim"] == "dynamic"
    assert kohya["graphgen.lora_format"] == "kohya" and kohya["note"] == "hi"
    assert "lora_adapter_metadata" not in kohya  # stale source keys are not carried over
    state, meta = lora_to_state_dict(lora, "diffusers")
    config = json.loads(meta["lora_adapter_metadata"])
    assert config["unet.lora_alpha"] == 4.0 and config["unet.r"] in (2, 3, 4)
    assert set(config["unet.target_modules"]) == set(lora.modules)
    assert all(k.startswith("unet.") for k in state)
    _, peft = lora_to_state_dict(lora, "peft")
    assert "lora_alpha" in json.loads(peft["lora_adapter_metadata"])


def test_kohya_alpha_reproduces_trained_scale(unet: nn.Module, tmp_path: Path) -> None:
    raw = random_lora(unet, seed=5, leaves=QKVO, alphas=(None,)).with_alpha(None)
    ckpt = write_lora(raw, tmp_path / "epoch=0-step=500.ckpt", to="diffsynth")
    from safetensors.torch import load_file

    default = load_file(str(convert_lora(ckpt, tmp_path / "scale1.safetensors")))
    trained = load_file(str(convert_lora(ckpt, tmp_path / "trained.safetensors", lora_alpha=4.0)))
    alpha_key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha"
    rank = raw.modules["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"].rank
    assert default[alpha_key].item() == rank  # scale 1 at strength 1, like DiffSynth's own loader
    assert trained[alpha_key].item() == 4.0  # ComfyUI strength 1 → 4 / rank, the peft training scale


def test_diffusers_loader_reads_our_diffusers_file(unet: nn.Module, tmp_path: Path) -> None:
    from diffusers import KolorsPipeline

    lora = random_lora(unet, seed=6, leaves=ALL_ATTN, alphas=(2.0, 8.0, 2.5))
    path = write_lora(lora, tmp_path / "pytorch_lora_weights.safetensors", to="diffusers")
    with applied_loras(unet, [(lora, 1.0)]):
        ours = run(unet)

    theirs_unet = copy.deepcopy(unet)
    state, alphas, metadata = KolorsPipeline.lora_state_dict(str(path), return_lora_metadata=True)
    assert metadata is not None and metadata["unet.alpha_pattern"]
    KolorsPipeline.load_lora_into_unet(state, alphas, theirs_unet, adapter_name="ours", metadata=metadata)
    theirs = run(theirs_unet)
    assert (theirs - run(unet)).abs().max() > 1e-2
    torch.testing.assert_close(theirs, ours, rtol=0, atol=TOL)
    with pytest.raises(LoraError, match="wrapped by peft adapters"), applied_loras(theirs_unet, lora):
        pass


@pytest.mark.parametrize("fmt", ["kohya", "kohya_diffusers"])
def test_diffusers_kohya_conversion_agrees_with_our_names(unet: nn.Module, fmt: str, tmp_path: Path) -> None:
    """diffusers' own kohya → peft key conversion lands on the same modules (mixed ranks).

    Alphas are uniform here: diffusers 0.42.1 drops per-module alphas of kohya files whose alphas
    differ (its ``alpha_pattern`` keys keep ``processor.to_q_lora.down.weight`` and match nothing).
    LDM names need ``unet_config`` for diffusers' SGM remapping, which ``KolorsPipeline.load_lora_weights``
    does not pass (it uses the SD 1.x mixin), so only ``kohya_diffusers`` loads there as-is.
    """
    from diffusers import KolorsPipeline

    lora = random_lora(unet, seed=7, leaves=ALL_ATTN, alphas=(2.0,))
    path = write_lora(lora, tmp_path / "kohya.safetensors", to=fmt)
    with applied_loras(unet, [(lora, 1.0)]):
        ours = run(unet)
    theirs_unet = copy.deepcopy(unet)
    extra = {"unet_config": unet.config} if fmt == "kohya" else {}
    state, alphas = KolorsPipeline.lora_state_dict(str(path), **extra)
    KolorsPipeline.load_lora_into_unet(state, alphas, theirs_unet, adapter_name="kohya")
    torch.testing.assert_close(run(theirs_unet), ours, rtol=0, atol=TOL)
