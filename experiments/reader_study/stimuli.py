"""The images a reader study shows: the study's adversarial sets that the cache holds, and the PNGs
of the planned test images, clean and attacked, read chunk by chunk (never a whole set in memory)."""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
from omegaconf import DictConfig

from attacks import AdversarialSetCache

from ..design.facts import StudyFacts
from ..design.scheduler import Scheduler
from ..execution.evaluation import TestSet
from .images import png_bytes, quantise
from .plan import ReaderPlan, StoredSet

CLEAN = ""  # the key of a clean image in `Stimuli`


def stored_sets(cfg: DictConfig, cache: AdversarialSetCache, facts: StudyFacts) -> list[StoredSet]:
    """The study's adversarial sets (every seed, surrogate and attack setting) found in `cache`."""
    found: dict[str, StoredSet] = {}
    for job in Scheduler(cfg, facts).set_jobs():
        if job.key in cache and job.key not in found:
            found[job.key] = StoredSet(job.key, job.setting["name"], float(job.setting["eps"]),
                                       job.surrogate.name, job.seed)
    return list(found.values())


def _picked(batches: Iterable[torch.Tensor], wanted: set[int], what: str, size: int) -> Iterator[tuple[int, bytes]]:
    """(test position, PNG) of the `wanted` positions of a stream of image batches of `size` images."""
    start = 0
    for batch in batches:
        for offset in sorted(p - start for p in wanted if start <= p < start + len(batch)):
            yield start + offset, png_bytes(quantise(batch[offset:offset + 1])[0])
        start += len(batch)
    if start != size:
        raise ValueError(f"reader study: {what} holds {start} images, the test split {size}; "
                         "it was crafted on other data (run the study again)")


class Stimuli:
    """PNG bytes of each planned image, by (set key or CLEAN, test position)."""

    def __init__(self, plan: ReaderPlan, test: TestSet, cache: AdversarialSetCache):
        size = len(test.sample_ids)
        self.png: dict[tuple[str, int], bytes] = {}
        wanted = {sample for _, sample in plan.base}
        self.png.update(((CLEAN, p), png) for p, png in _picked(test.batches(), wanted, "the test split", size))
        for key in dict.fromkeys(stored.key for stored, _ in plan.base):
            adversarial = (adv for adv, _ in cache.chunks(key, test.batches()))
            self.png.update(((key, p), png) for p, png in
                            _picked(adversarial, set(plan.samples(key)), f"adversarial set {key}", size))

    def image(self, key: str, sample: int) -> bytes:
        return self.png[key, sample]
