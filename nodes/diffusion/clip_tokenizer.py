"""The standard CLIP tokenizer (SD1.5's and SDXL's), built from the BPE table graphgen ships.

Single-file checkpoints carry no tokenizer, and nothing may be downloaded, so graphgen ships
CLIP's byte-pair table: ``clip_vocab/bpe_simple_vocab_16e6.txt.gz`` as OpenAI's CLIP and
open_clip distribute it (MIT licence, ``clip_vocab/LICENSE``). The 49,408-token vocabulary is
derived from it exactly as CLIP does: the 256 byte symbols, the same with the end-of-word mark
``</w>``, one token per merge (48,894 merges), then ``<|startoftext|>`` and ``<|endoftext|>``
(ids 49406 and 49407). transformers' ``CLIPTokenizer`` takes the vocabulary and merges as
objects, so no file is written.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Any

__all__ = ["BPE_FILE", "VOCAB_SIZE", "clip_tokenizer", "clip_vocab"]

BPE_FILE = Path(__file__).with_name("clip_vocab") / "bpe_simple_vocab_16e6.txt.gz"
#: Tokens in CLIP's vocabulary.
VOCAB_SIZE = 49408
_N_MERGES = VOCAB_SIZE - 256 * 2 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable unicode symbols."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@functools.lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (token → id) and merge list, read from the shipped BPE table."""
    with gzip.open(BPE_FILE, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : 1 + _N_MERGES]  # line 0 is the version header
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=8)
def clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77) -> Any:
    """The ``transformers.CLIPTokenizer`` with the standard vocabulary (one shared instance per settings:
    building one takes tens of milliseconds, as long as a tiny model's whole text encoding).

    Args:
        pad_token: ``<|endoftext|>`` for CLIP ViT-L (SD1.5, SDXL's first encoder); ``!`` (id 0)
            for SDXL's OpenCLIP ViT-bigG tokenizer.
        model_max_length: Tokens per chunk, start and end tokens included.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    pairs = [tuple(m.split()) for m in merges]
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, pad_token=pad_token,
                         model_max_length=model_max_length)
