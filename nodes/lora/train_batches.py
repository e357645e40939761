"""Drawing training batches from cached data: buckets, repeats, augmentation variants, captions.

All randomness of a batch comes from the step's CPU generator, in a fixed order (sample indices,
augmentation variants, timestep, noise, then caption choices), so a resumed run draws what an
uninterrupted one draws. Without buckets, repeats or caption variants the draws are exactly those
of the first trainer (``randint`` over the items), so its runs keep their weights.

* Buckets: items whose latents differ in shape (aspect-ratio buckets) never share a batch. The
  first sample is drawn over all items (weighted by repeats), the rest from its bucket.
* Repeats: kohya's ``<repeats>_<name>`` folders weight items' sampling probability.
* Captions: a sample uses one of its item's cached caption variants (shuffled tags), or the empty
  caption with probability ``caption_dropout_rate``. When the text encoders train
  (``live_captions``), captions are encoded every step, so a shuffled caption is shuffled afresh
  (kohya's behaviour) from the same draw that picks a cached variant otherwise: both modes draw
  the same numbers, so their batches, timesteps and noise are the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .captions import shuffle_tags
from .families import TrainFamily
from .latent_cache import CachedData
from .train_config import TrainError

__all__ = ["Batch", "BatchSource"]


@dataclass
class Batch:
    """One micro-batch (CPU tensors).

    Attributes:
        latents: ``[B, 4, h, w]`` clean latents (fp32).
        embeds: ``[B, L, D]`` cached text hidden states (of the cached caption variants).
        pooled: ``[B, P]`` cached pooled text embeddings.
        time_ids: ``[B, 6]`` size/crop ids.
        timestep: ``[1]`` the batch's timestep.
        noise: ``[B, 4, h, w]`` standard normal noise.
        items: The items' indices.
        captions: The caption each sample trains with (what ``embeds`` encode without
            ``live_captions``; a fresh shuffle with them; ``""`` where dropped).
    """

    latents: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor
    timestep: torch.Tensor
    noise: torch.Tensor
    items: torch.Tensor
    captions: list[str]


class BatchSource:
    """Draws batches from :class:`CachedData` for a family and batch size."""

    def __init__(self, data: CachedData, family: TrainFamily, batch_size: int, timesteps: int,
                 caption_dropout_rate: float = 0.0, live_captions: bool = False) -> None:
        """Groups the items by latent shape.

        Args:
            data: The cached data (non-empty).
            family: Decides the size/crop ids.
            batch_size: Samples per batch.
            timesteps: Number of training timesteps (``t`` is uniform in ``[0, timesteps)``).
            caption_dropout_rate: Probability of the empty caption (needs ``data.empty_text``).
            live_captions: Captions are encoded every step (text-encoder training): shuffle afresh.

        Raises:
            TrainError: Empty data, items with different numbers of variants, or dropout without
                a cached empty caption.
        """
        if not data.items:
            raise TrainError("the training data is empty")
        self.data, self.family, self.batch, self.timesteps = data, family, batch_size, timesteps
        self.dropout, self.live = caption_dropout_rate, live_captions
        self.keep_tokens = data.spec.captions.keep_tokens
        if self.dropout > 0 and data.empty_text is None:
            raise TrainError("caption dropout needs the empty caption in the cache: rebuild it with the config")
        variants = {int(it.latents.shape[0]) for it in data.items}
        if len(variants) != 1:
            raise TrainError(f"cached items have different numbers of variants {sorted(variants)}: rebuild the cache")
        self.n_var = variants.pop()
        shapes = [tuple(it.latents.shape[1:]) for it in data.items]
        self.buckets = sorted(set(shapes))
        self.bucket_of = torch.tensor([self.buckets.index(s) for s in shapes])
        self.weights = torch.tensor([float(it.repeats) for it in data.items])
        self.simple = len(self.buckets) == 1 and bool((self.weights == self.weights[0]).all())
        self.shuffled = any(it.text_variants for it in data.items)
        self.latents = [it.latents.float() for it in data.items]

    def draw(self, gen: torch.Generator) -> Batch:
        """The batch of one (micro-)step, drawn from ``gen``."""
        n, b = len(self.data.items), self.batch
        if self.simple:
            idx = torch.randint(n, (b,), generator=gen)
        else:
            first = torch.multinomial(self.weights, 1, generator=gen)
            same = torch.where(self.bucket_of == self.bucket_of[first], self.weights, torch.zeros(()))
            rest = torch.multinomial(same, b - 1, replacement=True, generator=gen) if b > 1 else first[:0]
            idx = torch.cat([first, rest])
        var = torch.randint(self.n_var, (b,), generator=gen)
        t = torch.randint(0, self.timesteps, (1,), generator=gen)
        latents = torch.stack([self.latents[int(i)][int(v)] for i, v in zip(idx, var, strict=True)])
        noise = torch.randn(latents.shape, generator=gen)
        texts = [(self.data.items[int(i)].prompt_embeds, self.data.items[int(i)].pooled) for i in idx]
        captions = [self.data.items[int(i)].caption for i in idx]
        if self.shuffled:
            picks = torch.randint(0, 2**31 - 1, (b,), generator=gen)
            for row, i in enumerate(idx.tolist()):
                item = self.data.items[i]
                if self.live:
                    captions[row] = shuffle_tags(item.caption, self.keep_tokens, random.Random(int(picks[row])))
                    continue
                choice = int(picks[row]) % (1 + len(item.text_variants))
                if choice:
                    texts[row] = item.text_variants[choice - 1]
                    captions[row] = item.variant_captions[choice - 1]
        if self.dropout > 0:
            drop = torch.rand((b,), generator=gen) < self.dropout
            for row in torch.nonzero(drop).flatten().tolist():
                texts[row] = self.data.empty_text  # type: ignore[assignment]
                captions[row] = ""
        ids = []
        for i, v in zip(idx.tolist(), var.tolist(), strict=True):
            item = self.data.items[i]
            crop = item.crops[v] if item.crops else (0, 0)
            ids.append(self.family.time_ids(item.target_size, item.original_size, crop))
        return Batch(
            latents=latents,
            embeds=torch.stack([e for e, _ in texts]),
            pooled=torch.stack([p for _, p in texts]),
            time_ids=torch.tensor(ids, dtype=torch.float32),
            timestep=t,
            noise=noise,
            items=idx,
            captions=captions,
        )
