"""Numbered batches for `Trainer.predict`, shared out among the processes of a device group.

An item of these data sets is a whole batch ending in its batch id: the test images
`(images, labels, batch_id)` or an adversarial set's batch `(adversarial + control, batch_id)`.
Each process predicts every `world`-th batch id (`rank_loader`), so a batch holds the same images
however many processes share the work. They are sent to the other processes as recipes: there,
`on(process)` reads what they need through that process (once per process).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from attacks import AdversarialSetCache

from .devices import Process


class TestBatches(Dataset):
    """The shared test split in batches of `data_cfg["batch_size"]`, in test-set order.

    `dataset`: the test split when this process has it already (never sent to other processes)."""

    def __init__(self, data_cfg: dict, dataset: Dataset | None = None):
        self.data_cfg, self.size, self.dataset = data_cfg, int(data_cfg["batch_size"]), dataset

    def __getstate__(self) -> dict:
        return {**self.__dict__, "dataset": None}

    def on(self, process: Process) -> "TestBatches":
        """These batches in `process`, which reads the test split unless this process has it."""
        if self.dataset is None:
            module = process.data(self.data_cfg).datamodule("d1")
            module.setup()
            self.dataset = module.dataset("test")
        return self

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.size)

    def __getitem__(self, batch_id: int):
        stop = min((batch_id + 1) * self.size, len(self.dataset))
        images, labels = default_collate([self.dataset[i][:2] for i in range(batch_id * self.size, stop)])
        return images, labels, batch_id


class SetBatches(Dataset):
    """A stored adversarial set batch by batch: `(adversarial + control, batch_id)` with the
    adversarial images first, then their control noise (one forward pass scores both), each batch
    read against its clean images (`clean`: the test batches the set was crafted on)."""

    def __init__(self, root: str, key: str, clean: TestBatches):
        self.cache, self.key, self.clean = AdversarialSetCache(root), key, clean
        self.offsets = self.cache.offsets(key)

    def on(self, process: Process) -> "SetBatches":
        """These batches in `process` (every process reads the cache, and the test split, itself)."""
        self.clean = self.clean.on(process)
        return self

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, batch_id: int):
        adversarial, control = self.cache.chunk(self.key, self.offsets[batch_id], self.clean[batch_id][0], batch_id)
        return torch.cat([adversarial, control]), batch_id


def rank_batches(count: int, rank: int, world: int) -> list[int]:
    """The batch ids process `rank` of `world` predicts: every `world`-th, its last one repeated
    until every process has as many steps (the repeats are dropped when gathered)."""
    mine = list(range(rank, count, world)) or [count - 1]
    steps = -(-count // world)
    return mine + mine[-1:] * (steps - len(mine))


def rank_loader(batches: Dataset, rank: int = 0, world: int = 1, num_workers: int = 0) -> DataLoader:
    """A loader of the numbered batches this process predicts."""
    return DataLoader(batches, batch_size=None, sampler=rank_batches(len(batches), rank, world),
                      num_workers=num_workers)
