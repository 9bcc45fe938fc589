"""Crafting sub-batches: a batch split into pieces that fit the device, halved when they do not.

An attack that draws random numbers during a call (random starts, input diversity, variance-tuning
neighbours) crafts each batch in fixed pieces of `RNG_PIECE` images, aligned to the images' indices
in the batch and each with its own seed, so its set does not depend on how the batch is split.
"""
from __future__ import annotations

from typing import Callable

import torch

RNG_PIECE = 8  # images per call of an attack with random draws: never changed by a speed option


class CraftingBatch:
    """Splits each batch into sub-batches of at most `size` images (0 = the whole batch); with `auto`,
    a sub-batch that runs out of device memory is retried at half the size, which is then kept."""

    def __init__(self, size: int = 0, auto: bool = True):
        if size < 0:
            raise ValueError(f"crafting.batch_size: {size} must be >= 0 (0 = data.batch_size)")
        self.size, self.auto = size, auto

    def map(self, fn: Callable[[int, int], torch.Tensor], count: int, pieces: bool = False) -> torch.Tensor:
        """`fn(start, stop)` over consecutive sub-batches of `count` items, concatenated; with `pieces`,
        over the aligned pieces of `RNG_PIECE` items instead, whatever `size` is (never halved)."""
        if pieces:
            return torch.cat([fn(start, min(start + RNG_PIECE, count)) for start in range(0, count, RNG_PIECE)])
        parts, start = [], 0
        while start < count:
            stop = min(start + (self.size or count), count)
            try:
                parts.append(fn(start, stop))
            except torch.OutOfMemoryError:
                if not self.auto or stop - start == 1:
                    raise
                self.size = (stop - start) // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start = stop
        return torch.cat(parts)
