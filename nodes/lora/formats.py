"""Kolors UNet LoRA key formats: the name-mapping table and format detection.

Everything here is data plus two small interpreters of that data:

* **Block tables** map a naming scheme's module prefixes onto diffusers UNet module paths:
  DiffSynth's flat ``blocks.N`` numbering (``DIFFSYNTH_BLOCKS``, from kolors.md) and the original
  LDM/SGM names that kohya sd-scripts and ComfyUI use for SDXL-shaped UNets (``LDM_BLOCKS``,
  generated from the SDXL layout constants below).
* **Leaf tables** rename the last path segments inside a block (DiffSynth's ``to_out`` is
  diffusers' ``to_out.0``, LDM's ``emb_layers.1`` is ``time_emb_proj``...).
* **Key layouts** (``LAYOUTS``) describe each file format: accepted key prefixes, the suffixes of
  the down / up / alpha tensors, whether module paths are flattened with underscores (kohya), and
  where alpha lives.

``parse_key`` turns one state-dict key into ``(diffusers module path, part)`` for one layout,
``layout_key`` does the reverse, and ``detect_layout`` picks the layout that explains most keys.
Canonical module paths are the dotted names of ``UNet2DConditionModel.named_modules()``, e.g.
``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from graphgen_nodes.diffusion.ldm_keys import LDM_RESNET_LEAVES, UnetLayout, unet_block_rows

Part = Literal["down", "up", "alpha"]

# --------------------------------------------------------------------------------------------
# Block tables
# --------------------------------------------------------------------------------------------

#: DiffSynth-Studio's SDXL/Kolors UNet block numbers of the attention (transformer) blocks, the
#: only blocks DiffSynth's Kolors LoRA trainer targets (kolors.md, "DiffSynth block numbers").
DIFFSYNTH_BLOCKS: dict[int, str] = {
    7: "down_blocks.1.attentions.0",
    10: "down_blocks.1.attentions.1",
    15: "down_blocks.2.attentions.0",
    18: "down_blocks.2.attentions.1",
    21: "mid_block.attentions.0",
    25: "up_blocks.0.attentions.0",
    28: "up_blocks.0.attentions.1",
    31: "up_blocks.0.attentions.2",
    35: "up_blocks.1.attentions.0",
    38: "up_blocks.1.attentions.1",
    41: "up_blocks.1.attentions.2",
}

#: SDXL/Kolors UNet layout: three resolution levels, two resnets per down level (three per up
#: level), transformer blocks on down levels 1-2, in the middle and on up levels 0-1.
SDXL_LEVELS = 3
SDXL_DOWN_LAYERS = 2
SDXL_DOWN_ATTENTION_LEVELS = (1, 2)
SDXL_UP_ATTENTION_LEVELS = (0, 1)

#: ``(ldm_prefix, diffusers_prefix)``: kohya/ComfyUI (LDM, "SGM") names of the Kolors UNet.
LDM_BLOCKS: tuple[tuple[str, str], ...] = unet_block_rows(
    UnetLayout(SDXL_LEVELS, SDXL_DOWN_LAYERS, SDXL_DOWN_ATTENTION_LEVELS))

#: ``(diffusers_suffix, ldm_suffix)`` inside LDM resnet blocks; transformer blocks need none.
LDM_LEAVES: tuple[tuple[str, str], ...] = LDM_RESNET_LEAVES

#: ``(diffusers_suffix, diffsynth_suffix)`` inside DiffSynth attention blocks.
DIFFSYNTH_LEAVES: tuple[tuple[str, str], ...] = (
    ("to_out.0", "to_out"),
    ("ff.net.0.proj", "act_fn.proj"),
    ("ff.net.2", "ff"),
)

#: ``(diffusers_suffix, processor_suffix)`` of the old diffusers attention-processor LoRA keys.
ATTN_PROCESSOR_LEAVES: tuple[tuple[str, str], ...] = (
    ("to_q", "processor.to_q_lora"),
    ("to_k", "processor.to_k_lora"),
    ("to_v", "processor.to_v_lora"),
    ("to_out.0", "processor.to_out_lora"),
)

#: First segment of every diffusers ``UNet2DConditionModel`` module path.
UNET_TOP_LEVEL = (
    "down_blocks",
    "up_blocks",
    "mid_block",
    "conv_in",
    "conv_out",
    "conv_norm_out",
    "time_embedding",
    "add_embedding",
    "encoder_hid_proj",
    "class_embedding",
)

#: Identifiers that contain underscores, needed to undo kohya's ``.`` → ``_`` flattening
#: (longest match first): ``to_out_0`` → ``to_out.0``, ``transformer_blocks_3`` → ``transformer_blocks.3``.
#: Every top-level UNet name with an underscore is one.
COMPOUND_WORDS: tuple[str, ...] = (
    *(name for name in UNET_TOP_LEVEL if "_" in name),
    "transformer_blocks",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    "proj_in",
    "proj_out",
    "time_emb_proj",
    "conv_shortcut",
    "linear_1",
    "linear_2",
    "input_blocks",
    "middle_block",
    "output_blocks",
    "emb_layers",
    "in_layers",
    "out_layers",
    "skip_connection",
    "time_embed",
    "label_emb",
)
_COMPOUNDS = sorted((tuple(w.split("_")) for w in COMPOUND_WORDS), key=len, reverse=True)


@dataclass(frozen=True)
class Naming:
    """A module naming scheme, mapped onto diffusers paths by a block table and a leaf table.

    Attributes:
        name: ``"diffusers"``, ``"ldm"`` or ``"diffsynth"``.
        blocks: ``(scheme_prefix, diffusers_prefix)`` rows; empty means the names are diffusers'.
        leaves: ``(diffusers_suffix, scheme_suffix)`` rows applied to the path below the block.
        exact_leaves: a leaf row must equal the whole path below the block (LDM resnet children),
            instead of matching its trailing segments (DiffSynth's ``...attn1.to_out``).
    """

    name: str
    blocks: tuple[tuple[str, str], ...] = ()
    leaves: tuple[tuple[str, str], ...] = ()
    exact_leaves: bool = False


DIFFUSERS_NAMING = Naming("diffusers")
LDM_NAMING = Naming("ldm", LDM_BLOCKS, LDM_LEAVES, exact_leaves=True)
DIFFSYNTH_NAMING = Naming(
    "diffsynth", tuple((f"blocks.{n}", p) for n, p in DIFFSYNTH_BLOCKS.items()), DIFFSYNTH_LEAVES
)

_ADAPTER_NAME = r"(?:\.[A-Za-z0-9_-]+)?"  # peft saves `lora_A.<adapter>.weight` from a model's state_dict


@dataclass(frozen=True)
class KeyLayout:
    """One LoRA file format: how a (module, part) pair is spelled as a state-dict key.

    Attributes:
        name: format id, also ``LoraWeights.format`` and ``write_lora(to=...)``.
        naming: module naming scheme of the module part of the key.
        prefixes: accepted key prefixes; the first one is written.
        suffixes: ``(written suffix, regex accepted on read)`` for ``down``, ``up`` and
            optionally ``alpha`` (a per-module scalar tensor).
        flat: module paths are written with ``_`` instead of ``.`` (kohya).
        leaves: ``(diffusers_suffix, layout_suffix)`` rows that every key must match (old
            attention processors), applied before the naming scheme.
        alpha_in_metadata: alpha lives in the safetensors metadata as a peft ``LoraConfig``.
        container: ``"safetensors"`` or ``"pickle"`` (a plain dict of tensors, ``torch.save``).
        scale_note: how the format's own loaders scale the update.
    """

    name: str
    naming: Naming
    prefixes: tuple[str, ...]
    suffixes: dict[Part, tuple[str, str]]
    flat: bool = False
    leaves: tuple[tuple[str, str], ...] = ()
    alpha_in_metadata: bool = False
    container: Literal["safetensors", "pickle"] = "safetensors"
    scale_note: str = ""

    @property
    def stores_alpha(self) -> bool:
        """Whether the format can record each module's alpha."""
        return self.alpha_in_metadata or "alpha" in self.suffixes


_PEFT_SUFFIXES: dict[Part, tuple[str, str]] = {
    "down": (".lora_A.weight", rf"\.lora_A{_ADAPTER_NAME}\.weight"),
    "up": (".lora_B.weight", rf"\.lora_B{_ADAPTER_NAME}\.weight"),
}
_KOHYA_SUFFIXES: dict[Part, tuple[str, str]] = {
    "down": (".lora_down.weight", r"\.lora_down\.weight"),
    "up": (".lora_up.weight", r"\.lora_up\.weight"),
    "alpha": (".alpha", r"\.alpha"),
}

#: Every supported format, in detection priority order (ties go to the earlier one).
LAYOUTS: dict[str, KeyLayout] = {
    layout.name: layout
    for layout in (
        KeyLayout(
            "diffsynth",
            DIFFSYNTH_NAMING,
            ("",),
            {
                "down": (".lora_A.default.weight", rf"\.lora_A{_ADAPTER_NAME}\.weight"),
                "up": (".lora_B.default.weight", rf"\.lora_B{_ADAPTER_NAME}\.weight"),
            },
            container="pickle",
            scale_note="no alpha stored; DiffSynth's ModelManager applies lora_alpha (default 1.0) · B·A",
        ),
        KeyLayout(
            "diffusers_attn_procs",
            DIFFUSERS_NAMING,
            ("unet.", ""),
            {"down": (".down.weight", r"\.down\.weight"), "up": (".up.weight", r"\.up\.weight")},
            leaves=ATTN_PROCESSOR_LEAVES,
            scale_note="no alpha stored; diffusers applies 1 · B·A",
        ),
        KeyLayout(
            "diffusers",
            DIFFUSERS_NAMING,
            ("unet.",),
            _PEFT_SUFFIXES,
            alpha_in_metadata=True,
            scale_note="peft: lora_alpha / r from the `lora_adapter_metadata` JSON (alpha = r when absent)",
        ),
        KeyLayout(
            "diffusers_legacy",
            DIFFUSERS_NAMING,
            ("unet.", ""),
            {
                "down": (".lora.down.weight", r"\.lora\.down\.weight"),
                "up": (".lora.up.weight", r"\.lora\.up\.weight"),
                "alpha": (".alpha", r"\.alpha"),
            },
            scale_note="1 · B·A (alpha / rank when an `.alpha` tensor is present)",
        ),
        KeyLayout(
            "peft",
            DIFFUSERS_NAMING,
            ("", "base_model.model."),
            _PEFT_SUFFIXES,
            alpha_in_metadata=True,
            scale_note="peft: lora_alpha / r from metadata or adapter_config.json (alpha = r when absent)",
        ),
        KeyLayout(
            "kohya",
            LDM_NAMING,
            ("lora_unet_",),
            _KOHYA_SUFFIXES,
            flat=True,
            scale_note="strength · alpha / rank (alpha = rank when the `.alpha` tensor is absent)",
        ),
        KeyLayout(
            "kohya_diffusers",
            DIFFUSERS_NAMING,
            ("lora_unet_",),
            _KOHYA_SUFFIXES,
            flat=True,
            scale_note="strength · alpha / rank (alpha = rank when the `.alpha` tensor is absent)",
        ),
    )
}

_PART_RES: dict[str, tuple[tuple[Part, re.Pattern[str]], ...]] = {
    name: tuple(
        (part, re.compile(rf"^(?P<module>.+?){read}$")) for part, (_, read) in layout.suffixes.items()
    )
    for name, layout in LAYOUTS.items()
}

# --------------------------------------------------------------------------------------------
# Interpreters
# --------------------------------------------------------------------------------------------


def _swap_suffix(
    path: str, rows: Iterable[tuple[str, str]], *, to_scheme: bool, exact: bool = False
) -> str | None:
    """Renames the trailing segments of ``path`` by the first matching ``(diffusers, scheme)`` row.

    Args:
        path: dotted path below a block prefix (or a whole path).
        rows: ``(diffusers_suffix, scheme_suffix)`` rows.
        to_scheme: map diffusers → scheme when true, scheme → diffusers otherwise.
        exact: a row must match the whole ``path``.

    Returns:
        The renamed path, or ``None`` when no row matches.
    """
    for diffusers_suffix, scheme_suffix in rows:
        old, new = (diffusers_suffix, scheme_suffix) if to_scheme else (scheme_suffix, diffusers_suffix)
        if path == old:
            return new
        if not exact and path.endswith("." + old):
            return path[: -len(old)] + new
    return None


def _swap_prefix(path: str, rows: Iterable[tuple[str, str]], *, to_scheme: bool) -> tuple[str, str] | None:
    """Finds the longest ``(scheme, diffusers)`` block row that prefixes ``path``.

    Returns:
        ``(renamed_prefix, rest)`` where ``rest`` is ``""`` or starts after the prefix's dot,
        or ``None`` when no row matches.
    """
    best: tuple[str, str] | None = None
    for scheme_prefix, diffusers_prefix in rows:
        old, new = (diffusers_prefix, scheme_prefix) if to_scheme else (scheme_prefix, diffusers_prefix)
        if (path == old or path.startswith(old + ".")) and (best is None or len(old) > len(best[0])):
            best = (old, new)
    if best is None:
        return None
    old, new = best
    return new, path[len(old) + 1 :]


def is_unet_path(path: str) -> bool:
    """Whether ``path`` looks like a diffusers ``UNet2DConditionModel`` module path."""
    return path.split(".", 1)[0] in UNET_TOP_LEVEL and ".." not in path and not path.endswith(".")


def to_diffusers_path(path: str, naming: Naming) -> str | None:
    """Maps a module path in ``naming`` to its diffusers UNet path.

    Args:
        path: dotted module path in the scheme, e.g. ``blocks.7.transformer_blocks.0.attn1.to_out``.
        naming: the scheme.

    Returns:
        The diffusers path, or ``None`` when the table has no row for it.
    """
    if naming.blocks:
        found = _swap_prefix(path, naming.blocks, to_scheme=False)
        if found is None:
            return None
        prefix, rest = found
        if rest:
            rest = _swap_suffix(rest, naming.leaves, to_scheme=False, exact=naming.exact_leaves) or rest
        path = f"{prefix}.{rest}" if rest else prefix
    return path if is_unet_path(path) else None


def from_diffusers_path(path: str, naming: Naming) -> str | None:
    """Maps a diffusers UNet module path into ``naming``.

    Returns:
        The scheme's path, or ``None`` when the scheme has no name for that module
        (e.g. DiffSynth names only the attention blocks).
    """
    if not naming.blocks:
        return path
    found = _swap_prefix(path, naming.blocks, to_scheme=True)
    if found is None:
        return None
    prefix, rest = found
    if rest:
        rest = _swap_suffix(rest, naming.leaves, to_scheme=True, exact=naming.exact_leaves) or rest
    return f"{prefix}.{rest}" if rest else prefix


def unflatten(name: str) -> str:
    """Undoes kohya's underscore flattening of a dotted module path.

    Args:
        name: e.g. ``input_blocks_4_1_transformer_blocks_0_attn1_to_out_0``.

    Returns:
        e.g. ``input_blocks.4.1.transformer_blocks.0.attn1.to_out.0``.
    """
    tokens = name.split("_")
    words: list[str] = []
    i = 0
    while i < len(tokens):
        for compound in _COMPOUNDS:
            if tuple(tokens[i : i + len(compound)]) == compound:
                words.append("_".join(compound))
                i += len(compound)
                break
        else:
            words.append(tokens[i])
            i += 1
    return ".".join(words)


#: kohya's text-encoder key prefix of each CLIP encoder, per model family (sd-scripts' naming:
#: ``lora_te_`` for SD1.5's ViT-L, ``lora_te1_``/``lora_te2_`` for SDXL's ViT-L/bigG).
KOHYA_TE_PREFIXES: dict[str, dict[str, str]] = {
    "sd15": {"clip_l": "lora_te_"},
    "sdxl": {"clip_l": "lora_te1_", "clip_g": "lora_te2_"},
}


def kohya_te_name(path: str) -> str:
    """kohya's flattened name of a CLIP text-encoder module (without the ``lora_te*_`` prefix).

    Args:
        path: the module path in ``CLIPTextModel``/``CLIPTextModelWithProjection``, with or
            without the leading ``text_model.``, e.g. ``encoder.layers.0.self_attn.q_proj``.

    Returns:
        e.g. ``text_model_encoder_layers_0_self_attn_q_proj``.
    """
    full = path if path.startswith("text_model.") else "text_model." + path
    return full.replace(".", "_")


def parse_key(key: str, layout: KeyLayout) -> tuple[str, Part] | None:
    """Reads one state-dict key under one layout.

    Args:
        key: the state-dict key.
        layout: the format to read it as.

    Returns:
        ``(diffusers module path, part)`` or ``None`` when the key is not of this layout or
        names no module of a Kolors UNet.
    """
    for part, pattern in _PART_RES[layout.name]:
        for prefix in sorted(layout.prefixes, key=len, reverse=True):
            if not key.startswith(prefix):
                continue
            match = pattern.match(key[len(prefix) :])
            if match is None:
                continue
            module = match["module"]
            if layout.flat:
                if "." in module:
                    continue
                module = unflatten(module)
            if layout.leaves:
                renamed = _swap_suffix(module, layout.leaves, to_scheme=False)
                if renamed is None:
                    continue
                module = renamed
            path = to_diffusers_path(module, layout.naming)
            if path is not None:
                return path, part
    return None


def layout_module_name(path: str, layout: KeyLayout) -> str | None:
    """Spells a diffusers module path as ``layout`` does, without prefix and part suffix.

    Returns:
        The name, or ``None`` when the layout cannot name that module.
    """
    name = from_diffusers_path(path, layout.naming)
    if name is None:
        return None
    if layout.leaves:
        name = _swap_suffix(name, layout.leaves, to_scheme=True)
        if name is None:
            return None
    return name.replace(".", "_") if layout.flat else name


def layout_key(path: str, part: Part, layout: KeyLayout) -> str | None:
    """Spells the key of one part of one module in ``layout``.

    Args:
        path: diffusers module path.
        part: ``"down"``, ``"up"`` or ``"alpha"``.
        layout: the format.

    Returns:
        The key, or ``None`` when the layout cannot name that module or has no such part.
    """
    name = layout_module_name(path, layout)
    if name is None or part not in layout.suffixes:
        return None
    return layout.prefixes[0] + name + layout.suffixes[part][0]


def detect_layout(keys: Iterable[str]) -> tuple[KeyLayout | None, dict[str, int]]:
    """Picks the layout under which most keys parse.

    Args:
        keys: state-dict keys.

    Returns:
        ``(layout or None when no key parses under any layout, {layout name: parsed key count})``.
    """
    keys = list(keys)
    counts = {name: sum(parse_key(k, layout) is not None for k in keys) for name, layout in LAYOUTS.items()}
    best = max(counts, key=lambda name: counts[name])  # max keeps the first (priority) on ties
    return (LAYOUTS[best] if counts[best] else None), counts
