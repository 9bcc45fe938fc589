"""The seeded trial plan of a reader study: which test images of which adversarial sets each reader
sees, in which order, on which side, and which trials come back to measure consistency.

Every reader sees the same base trials (the same images), in an order drawn from the plan seed and
the reader's pseudonym. The sides (which one is attacked, and the "no idea" coin) are drawn from the
server's secret and the pseudonym, so nobody who knows only the config can work them out; a reader's
plan is the same after any restart that keeps the secret.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np

SIDES = ("left", "right")


@dataclass(frozen=True)
class StoredSet:
    """One adversarial set of the study that the cache holds: its identity and what it is."""
    key: str
    attack: str
    eps: float
    surrogate: str
    seed: int


@dataclass(frozen=True)
class Trial:
    """One presentation to one reader: the attacked version of test image `sample` (its position in
    the test split) from `set`, beside the clean image. `repeat_of` is the index of the earlier
    presentation of the same images; `guess` is the side that counts when the reader has no idea."""
    index: int
    set: StoredSet
    sample: int
    attacked: str
    guess: str
    repeat_of: int | None


def _rng(*parts, key: bytes | None = None) -> np.random.Generator:
    """A generator seeded by a hash of `parts` (stable across processes and Python versions), keyed
    (HMAC-SHA256) by `key` when one is given."""
    text = "/".join(map(str, parts)).encode()
    words = hashlib.sha256(text).digest() if key is None else hmac.new(key, text, "sha256").digest()
    return np.random.default_rng(np.frombuffer(words, dtype=np.uint32))


class ReaderPlan:
    """`trials_per_set` distinct test images per stored set (shared by all readers) and, per reader,
    `repeats` of them shown a second time, all shuffled, each with a random attacked side."""

    def __init__(self, sets: list[StoredSet], test_size: int, seed: int, trials_per_set: int, repeats: int):
        if not sets:
            raise ValueError("reader study: no adversarial sets to show")
        if trials_per_set < 1:
            raise ValueError(f"--trials-per-set: {trials_per_set} must be at least 1")
        if test_size < 1:
            raise ValueError("reader study: the test split is empty")
        self.seed, self.per_set = int(seed), min(int(trials_per_set), test_size)

        def drawn(stored: StoredSet) -> np.ndarray:
            return np.sort(_rng(seed, "samples", stored.key).choice(test_size, self.per_set, replace=False))

        self.base = [(stored, int(sample)) for stored in sets for sample in drawn(stored)]
        if not 0 <= repeats <= len(self.base):
            raise ValueError(f"--repeats: {repeats} must be between 0 and the {len(self.base)} base trials")
        self.repeats = int(repeats)

    @property
    def length(self) -> int:
        """Trials per reader."""
        return len(self.base) + self.repeats

    def samples(self, key: str) -> list[int]:
        """The test positions shown from set `key`."""
        return [sample for stored, sample in self.base if stored.key == key]

    def trials(self, reader: str, secret: bytes) -> list[Trial]:
        """The reader's trials in presentation order; their sides are drawn under `secret`."""
        if len(secret) < 16:
            raise ValueError("reader study: the plan's secret must be at least 16 bytes")
        rng = _rng(self.seed, "reader", reader)
        repeated = rng.choice(len(self.base), self.repeats, replace=False)
        shown = rng.permutation(np.concatenate([np.arange(len(self.base)), repeated]))
        sides = _rng(self.seed, "sides", reader, key=secret).integers(0, 2, size=(len(shown), 2))
        first: dict[int, int] = {}
        trials = []
        for index, (base, (attacked, guess)) in enumerate(zip(shown.tolist(), sides.tolist())):
            stored, sample = self.base[base]
            trials.append(Trial(index, stored, sample, SIDES[attacked], SIDES[guess], first.get(base)))
            first.setdefault(base, index)
        return trials
