"""LoRA key table, format detection and safe reading (graphgen_nodes.lora.formats / lora_file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphgen_nodes.lora.formats import (
    DIFFSYNTH_BLOCKS,
    LAYOUTS,
    LDM_BLOCKS,
    detect_layout,
    layout_key,
    parse_key,
)
from graphgen_nodes.lora.lora_file import LoraError, lora_from_state_dict, read_lora

ATTN = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"


@pytest.fixture(scope="module")
def linear_paths() -> list[str]:
    """Every Linear module path of the tiny Kolors UNet (same topology as the real one)."""
    from diffusers import UNet2DConditionModel

    from graphgen.testing.tiny_kolors import TINY_UNET_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    return [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)]


def test_block_tables_match_kolors_md() -> None:
    ldm = dict(LDM_BLOCKS)
    rows = [  # DiffSynth, diffusers, LDM (kolors.md)
        (7, "down_blocks.1.attentions.0", "input_blocks.4.1"),
        (10, "down_blocks.1.attentions.1", "input_blocks.5.1"),
        (15, "down_blocks.2.attentions.0", "input_blocks.7.1"),
        (18, "down_blocks.2.attentions.1", "input_blocks.8.1"),
        (21, "mid_block.attentions.0", "middle_block.1"),
        (25, "up_blocks.0.attentions.0", "output_blocks.0.1"),
        (28, "up_blocks.0.attentions.1", "output_blocks.1.1"),
        (31, "up_blocks.0.attentions.2", "output_blocks.2.1"),
        (35, "up_blocks.1.attentions.0", "output_blocks.3.1"),
        (38, "up_blocks.1.attentions.1", "output_blocks.4.1"),
        (41, "up_blocks.1.attentions.2", "output_blocks.5.1"),
    ]
    for number, diffusers, ldm_name in rows:
        assert DIFFSYNTH_BLOCKS[number] == diffusers
        assert ldm[ldm_name] == diffusers
    assert len(DIFFSYNTH_BLOCKS) == len(rows)
    assert len(set(ldm.values())) == len(ldm)  # one LDM name per diffusers module


@pytest.mark.parametrize(
    ("key", "layout", "path", "part"),
    [
        (
            "blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight",
            "diffsynth",
            f"{ATTN}.to_q",
            "down",
        ),
        (
            "blocks.7.transformer_blocks.0.attn1.to_out.lora_B.default.weight",
            "diffsynth",
            f"{ATTN}.to_out.0",
            "up",
        ),
        (
            "blocks.21.transformer_blocks.3.ff.lora_A.default.weight",
            "diffsynth",
            "mid_block.attentions.0.transformer_blocks.3.ff.net.2",
            "down",
        ),
        (f"unet.{ATTN}.to_q.lora_A.weight", "diffusers", f"{ATTN}.to_q", "down"),
        (f"{ATTN}.to_q.lora_B.weight", "peft", f"{ATTN}.to_q", "up"),
        (f"base_model.model.{ATTN}.to_k.lora_A.weight", "peft", f"{ATTN}.to_k", "down"),
        (f"unet.{ATTN}.to_q.lora.down.weight", "diffusers_legacy", f"{ATTN}.to_q", "down"),
        (f"unet.{ATTN}.processor.to_q_lora.down.weight", "diffusers_attn_procs", f"{ATTN}.to_q", "down"),
        (f"{ATTN}.processor.to_out_lora.up.weight", "diffusers_attn_procs", f"{ATTN}.to_out.0", "up"),
        (
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "kohya",
            f"{ATTN}.to_q",
            "down",
        ),
        (
            "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_out_0.alpha",
            "kohya",
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0",
            "alpha",
        ),
        (
            "lora_unet_output_blocks_3_1_proj_in.lora_up.weight",
            "kohya",
            "up_blocks.1.attentions.0.proj_in",
            "up",
        ),
        (
            "lora_unet_input_blocks_4_0_emb_layers_1.lora_down.weight",
            "kohya",
            "down_blocks.1.resnets.0.time_emb_proj",
            "down",
        ),
        (
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "kohya_diffusers",
            f"{ATTN}.to_q",
            "down",
        ),
    ],
)
def test_example_keys_detect_and_map(key: str, layout: str, path: str, part: str) -> None:
    found, _ = detect_layout([key])
    assert found is not None and found.name == layout
    assert parse_key(key, found) == (path, part)


def test_every_unet_linear_round_trips_through_every_layout(linear_paths: list[str]) -> None:
    assert len(linear_paths) > 200
    named = {name: 0 for name in LAYOUTS}
    for path in linear_paths:
        for name, layout in LAYOUTS.items():
            for part in layout.suffixes:
                key = layout_key(path, part, layout)
                if key is None:
                    continue
                named[name] += 1
                assert parse_key(key, layout) == (path, part), (name, key)
                best, _ = detect_layout([key])
                assert best is layout, (key, best)
    # kohya (LDM) and DiffSynth name every Linear of the transformer blocks
    attn_linears = [p for p in linear_paths if ".attentions." in p]
    assert named["diffsynth"] == 2 * len(attn_linears)
    assert named["kohya"] >= 3 * len(attn_linears)
    assert named["peft"] == 2 * len(linear_paths)


def test_kohya_text_encoder_keys_are_unmatched() -> None:
    down, up = torch.randn(4, 64), torch.randn(64, 4)
    state = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": down,
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": up,
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(2.0),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(4, 768),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(3072, 4),
        "lora_te2_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(4.0),
    }
    lora = lora_from_state_dict(state)
    assert lora.format == "kohya"
    assert list(lora.modules) == [f"{ATTN}.to_q"]
    assert lora.modules[f"{ATTN}.to_q"].alpha == 2.0
    assert sorted(lora.unmatched) == sorted(k for k in state if k.startswith("lora_te"))


def test_only_text_encoder_keys_raise() -> None:
    state = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(4, 8)}
    with pytest.raises(LoraError, match="text encoder"):
        lora_from_state_dict(state)


def test_unrelated_file_raises(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "flux.safetensors"
    save_file(
        {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 8)}, str(path)
    )
    with pytest.raises(LoraError, match="no key maps to a Kolors UNet module"):
        read_lora(path)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {
                f"{ATTN}.to_q.lora_A.weight": torch.randn(4, 64),
                f"{ATTN}.to_q.lora_B.weight": torch.randn(64, 3),
            },
            "rank mismatch .*to_q",
        ),
        ({f"{ATTN}.to_q.lora_A.weight": torch.randn(4, 64)}, "lora_A.weight.* no matching up"),
        (
            {
                f"{ATTN}.to_q.lora_A.weight": torch.randn(4, 64, 2),
                f"{ATTN}.to_q.lora_B.weight": torch.randn(64, 4),
            },
            "lora_A.weight: expected a 2-D",
        ),
        (
            {
                f"{ATTN}.to_q.lora_A.weight": torch.full((4, 64), float("nan")),
                f"{ATTN}.to_q.lora_B.weight": torch.randn(64, 4),
            },
            "lora_A.weight: contains NaN",
        ),
        (
            {
                f"{ATTN}.to_q.lora_A.weight": torch.ones(4, 64, dtype=torch.int64),
                f"{ATTN}.to_q.lora_B.weight": torch.randn(64, 4),
            },
            "lora_A.weight: expected a floating-point",
        ),
    ],
)
def test_malformed_tensors_name_the_key(state: dict[str, torch.Tensor], message: str) -> None:
    with pytest.raises(LoraError, match=message):
        lora_from_state_dict(state)


def test_kohya_alpha_must_be_scalar() -> None:
    key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    state = {
        f"{key}.lora_down.weight": torch.randn(4, 64),
        f"{key}.lora_up.weight": torch.randn(64, 4),
        f"{key}.alpha": torch.ones(2),
    }
    with pytest.raises(LoraError, match=rf"{key}\.alpha: alpha must be a scalar"):
        lora_from_state_dict(state)


def test_peft_alpha_from_metadata_and_sidecar_config(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    q, k = f"{ATTN}.to_q", f"{ATTN}.to_k"
    state = {
        f"{q}.lora_A.weight": torch.randn(4, 64),
        f"{q}.lora_B.weight": torch.randn(64, 4),
        f"{k}.lora_A.weight": torch.randn(8, 64),
        f"{k}.lora_B.weight": torch.randn(64, 8),
    }
    config = {"r": 4, "lora_alpha": 2.0, "alpha_pattern": {f"^{k}": 16.0}, "rank_pattern": {f"^{k}": 8}}
    prefixed = {f"unet.{key}": value for key, value in config.items()}
    meta = {"lora_adapter_metadata": json.dumps(prefixed)}
    lora = lora_from_state_dict({f"unet.{key}": v for key, v in state.items()}, meta)
    assert lora.format == "diffusers"
    assert (lora.modules[q].alpha, lora.modules[k].alpha) == (2.0, 16.0)
    assert lora.modules[k].scale == 2.0

    folder = tmp_path / "peft_adapter"
    folder.mkdir()
    save_file(state, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(config))
    from_dir = read_lora(folder)
    assert from_dir.format == "peft"
    assert (from_dir.modules[q].alpha, from_dir.modules[k].alpha) == (2.0, 16.0)

    bare = lora_from_state_dict(state)  # no config anywhere: alpha = rank, scale 1
    assert bare.modules[q].alpha is None and bare.modules[q].scale == 1.0
    assert lora_from_state_dict(state, lora_alpha=1.0).modules[k].scale == 1.0 / 8


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "epoch=0-step=500.ckpt"
    torch.save({"blocks.7.transformer_blocks.0.attn1.to_q.lora_A.default.weight": _Evil(marker)}, path)
    with pytest.raises(LoraError, match="was refused: Unsupported global") as info:
        read_lora(path)
    assert not marker.exists()
    assert "weights_only=False" not in str(info.value)  # never PyTorch's advice to turn the safety off


def test_plain_diffsynth_ckpt_reads(tmp_path: Path) -> None:
    prefix = "blocks.7.transformer_blocks.0.attn1.to_out"
    down, up = torch.randn(16, 64), torch.randn(64, 16)
    path = tmp_path / "epoch=0-step=500.ckpt"
    torch.save({f"{prefix}.lora_A.default.weight": down, f"{prefix}.lora_B.default.weight": up}, path)
    lora = read_lora(path, lora_alpha=4.0)
    assert lora.format == "diffsynth" and lora.metadata == {}
    module = lora.modules[f"{ATTN}.to_out.0"]
    assert torch.equal(module.down, down) and torch.equal(module.up, up)
    assert module.alpha == 4.0 and module.scale == 0.25
