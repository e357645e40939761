"""Aspect-ratio bucketing, as kohya sd-scripts' ``enable_bucket`` does it.

Images of mixed shapes train at (about) their own aspect ratio: a set of bucket sizes is made
for the training ``resolution`` (every size has at most ``resolution²`` pixels, sides between
``min_bucket_reso`` and ``max_bucket_reso``, multiples of ``bucket_reso_steps``), each image goes
to the bucket whose aspect ratio is nearest its own, is resized to cover the bucket and cropped
by the (small) excess only. A batch always comes from one bucket, so its latents stack.

The bucket set is kohya's ``make_bucket_resolutions``: for every width ``w`` from the minimum to
the maximum in steps, the height is the largest step multiple with ``w·h ≤ resolution²`` (capped
at the maximum), both orientations, plus the square bucket.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BucketSpec", "assign_bucket", "bucket_report", "bucket_sizes"]


@dataclass(frozen=True)
class BucketSpec:
    """How buckets are made.

    Attributes:
        resolution: Training resolution; buckets hold at most ``resolution²`` pixels.
        min_reso: Smallest bucket side (kohya's ``min_bucket_reso``, default 256).
        max_reso: Largest bucket side (kohya's ``max_bucket_reso``, default 1024; at least
            ``resolution``).
        steps: Bucket sides are multiples of this (kohya's ``bucket_reso_steps``, 64).
    """

    resolution: int
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64

    def check(self) -> str | None:
        """The first problem with these settings as one line, or ``None``."""
        if self.steps < 8 or self.steps % 8:
            return f"bucket_reso_steps must be a multiple of 8 (got {self.steps}): use 64 as kohya"
        if self.min_reso < self.steps or self.min_reso % self.steps:
            return (f"min_bucket_reso must be a multiple of bucket_reso_steps {self.steps} "
                    f"(got {self.min_reso}): e.g. 256")
        if self.max_reso % self.steps or self.max_reso < self.min_reso:
            return (f"max_bucket_reso must be a multiple of {self.steps} and at least min_bucket_reso "
                    f"(got {self.max_reso}): e.g. 1024 or 2048")
        if self.resolution < self.min_reso or self.resolution > self.max_reso:
            return (f"the resolution {self.resolution} must lie between min_bucket_reso {self.min_reso} "
                    f"and max_bucket_reso {self.max_reso}: widen the bucket range")
        return None


def bucket_sizes(spec: BucketSpec) -> list[tuple[int, int]]:
    """The bucket sizes ``(width, height)``, sorted by aspect ratio.

    Args:
        spec: The bucket settings.

    Returns:
        Distinct sizes, each side a multiple of ``spec.steps`` within ``[min_reso, max_reso]``.
    """
    max_area = spec.resolution * spec.resolution
    sizes = set()
    square = int(math.sqrt(max_area)) // spec.steps * spec.steps
    sizes.add((square, square))
    width = spec.min_reso
    while width <= spec.max_reso:
        height = min(spec.max_reso, (max_area // width) // spec.steps * spec.steps)
        if height >= spec.min_reso:
            sizes.add((width, height))
            sizes.add((height, width))
        width += spec.steps
    return sorted(sizes, key=lambda s: (s[0] / s[1], s[0]))


def assign_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest an image's (ties: the larger bucket).

    Args:
        size: Image size ``(width, height)``.
        buckets: Candidate bucket sizes ``(width, height)``.

    Returns:
        The chosen ``(width, height)``.
    """
    w, h = size
    log_ratio = math.log(w / h)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - log_ratio), -b[0] * b[1]))


def bucket_report(assignments: Iterable[tuple[tuple[int, int], int]]) -> list[str]:
    """Lines describing how many images (and samples, repeats counted) each bucket holds.

    Args:
        assignments: ``((width, height), repeats)`` per image.

    Returns:
        One line per used bucket, largest first, e.g. ``"bucket 512x768: 3 images, 30 samples"``.
    """
    images: Counter[tuple[int, int]] = Counter()
    samples: Counter[tuple[int, int]] = Counter()
    for bucket, repeats in assignments:
        images[bucket] += 1
        samples[bucket] += repeats
    return [
        f"bucket {w}x{h} (aspect {w / h:.2f}): {images[(w, h)]} images, {samples[(w, h)]} samples"
        for (w, h) in sorted(images, key=lambda b: (-images[b], b))
    ]
