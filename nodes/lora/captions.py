"""Caption augmentation as kohya users set it: tag shuffling with a kept prefix, caption dropout.

Text embeddings are cached (the text encoder leaves the device while the UNet trains), so a
caption cannot be re-shuffled at every step as kohya does when it encodes per step. Instead each
caption gets ``shuffle_variants`` shuffled versions, fixed per (seed, caption), all encoded once;
a step picks one at random. Caption dropout replaces a sample's caption by the empty caption
(its embedding is cached too) with probability ``caption_dropout_rate``. When the text encoders
train (``text_encoder_lr > 0``) captions are encoded every step, and each step shuffles afresh
(:mod:`.train_batches`), as kohya does.

Shuffling follows kohya's ``shuffle_caption``/``keep_tokens``: the caption is split at commas,
the first ``keep_tokens`` tags stay in place, the rest are shuffled, and the parts are joined
with ``", "``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

__all__ = ["CaptionOptions", "caption_variants", "shuffle_tags"]


@dataclass(frozen=True)
class CaptionOptions:
    """Caption augmentation settings.

    Attributes:
        shuffle_caption: Shuffle comma-separated tags.
        keep_tokens: Tags at the start that are never shuffled (kohya's ``keep_tokens``).
        shuffle_variants: Shuffled versions cached per caption (more: more variety, more encodes).
        caption_dropout_rate: Probability of training a sample with the empty caption.
    """

    shuffle_caption: bool = False
    keep_tokens: int = 0
    shuffle_variants: int = 4
    caption_dropout_rate: float = 0.0

    def check(self) -> str | None:
        """The first problem as one line, or ``None``."""
        if self.keep_tokens < 0:
            return f"keep_tokens must be >= 0 (got {self.keep_tokens})"
        if self.shuffle_variants < 1:
            return f"shuffle_variants must be >= 1 (got {self.shuffle_variants})"
        if not 0.0 <= self.caption_dropout_rate < 1.0:
            return f"caption_dropout_rate must be in [0, 1) (got {self.caption_dropout_rate}): e.g. 0.05"
        return None


def shuffle_tags(caption: str, keep_tokens: int, rng: random.Random) -> str:
    """One kohya-style shuffle of ``caption``'s comma-separated tags.

    Args:
        caption: The caption.
        keep_tokens: Leading tags kept in place.
        rng: Source of the permutation.

    Returns:
        The shuffled caption (tags stripped, joined with ``", "``).
    """
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


def caption_variants(caption: str, options: CaptionOptions, seed: int) -> list[str]:
    """The captions cached for one item: the caption itself first, then its shuffled versions.

    Deterministic in ``(caption, options, seed)``; duplicates (a caption with one tag) are
    dropped, so the list may be shorter than ``1 + shuffle_variants``.

    Args:
        caption: The item's caption.
        options: Augmentation settings.
        seed: The training seed.

    Returns:
        Distinct captions, the original first.
    """
    if not options.shuffle_caption:
        return [caption]
    digest = hashlib.sha256(f"{seed}:{options.keep_tokens}:{caption}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "little"))
    out = [caption]
    for _ in range(options.shuffle_variants):
        out.append(shuffle_tags(caption, options.keep_tokens, rng))
    return list(dict.fromkeys(out))
