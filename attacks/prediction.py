"""Adversarial sets as a model's predictions, gathered in batch order from every process.

A predict loader yields numbered batches `(images, ..., batch_id)`; under DDP each process gets its
own share of the batch ids, the same number of steps each (a process short of batches repeats its
last one). `CraftingModule.predict_step` attacks one batch; `BatchGather`, a prediction writer,
gathers each step's predictions from every process and hands each batch's once, in batch-id order,
to `sink(batch_id, *tensors)` on the main process: the whole set never has to be in memory, and one
process writes it.
"""
from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import nn

from .crafting_batch import CraftingBatch
from .craft import craft, surrogate_targets
from .registry import ATTACKS, attack_params, threat

Sink = Callable[..., None]


def batch_seed(seed: int, batch_id: int) -> int:
    """The seed of one batch's random draws, so a batch crafts the same wherever it runs."""
    return (int(seed) * 1_000_003 + int(batch_id)) % 2**63


def piece_seed(seed: int, batch_id: int, start: int) -> int:
    """The seed of one attack call's draws: the set's seed, the batch and the call's first image."""
    return (batch_seed(seed, batch_id) * 1_000_003 + int(start)) % 2**63


class BatchGather(BasePredictionWriter):
    """Hands each predict batch's prediction (a tensor or a tuple of tensors) to `sink` on the main
    process, in batch order; `sink` stays None on the other processes."""

    def __init__(self, sink: Sink | None = None):
        super().__init__(write_interval="batch")
        self.sink, self.next_id = sink, 0

    def __getstate__(self) -> dict:  # sent to the other processes without the main process's sink
        return {**self.__dict__, "sink": None}

    def on_predict_start(self, trainer, pl_module) -> None:
        self.next_id = 0

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        batch_id = int(batch[-1])
        parts = prediction if isinstance(prediction, tuple) else (prediction,)
        if trainer.world_size > 1:
            ids, gathered = gather_batches(batch_id, parts)
        else:
            ids, gathered = [batch_id], [parts]
        if not trainer.is_global_zero:
            return
        for index in sorted(range(len(ids)), key=ids.__getitem__):
            if ids[index] == self.next_id:  # a repeated batch (id below next_id) is dropped
                self.sink(ids[index], *(part.cpu() for part in gathered[index]))
                self.next_id += 1


class CraftingModule(pl.LightningModule):
    """A surrogate's adversarial set as its predictions: `predict_step` attacks a numbered batch
    `(images, labels, batch_id)` and returns its clean and adversarial images (the cache stores the
    second against the first; the control noise is drawn when the set is read).

    An attack with random draws (random starts, input diversity, variance-tuning neighbours) crafts
    a batch in the fixed pieces of `RNG_PIECE` images (attacks/crafting_batch.py), each call seeded with
    `piece_seed(seed, batch_id, first image)` in a forked RNG state (the global one is left as it
    was); the control noise, drawn on reading, comes from `batch_seed(seed, batch_id)`. So a set is
    the same byte for byte whichever process crafts a batch, in whatever order, whatever
    `batch_size` and `auto_batch` split it into. `batch_size`, `auto_batch`, `precision` and
    `channels_last` are the `crafting` speed options (`precision="bf16"` changes the set).

    A targeted setting also returns each image's target (`attacks.targets`), chosen for the whole
    batch before it is split: from the surrogate's clean logits, or drawn (`random`) from a generator
    seeded with `batch_seed(seed, batch_id)`; `label_names` resolve a target named by its label.
    """

    def __init__(self, surrogate: nn.Module, setting: dict, task: str, seed: int = 0, *, batch_size: int = 0,
                 auto_batch: bool = True, precision: str = "fp32", channels_last: bool = False,
                 label_names: list[str] | None = None):
        super().__init__()
        name, params = attack_params(setting)
        self.surrogate, self.setting, self.task, self.seed = surrogate, setting, task, int(seed)
        self.goal, self.label_names = threat(params)[0], list(label_names or [])
        self.pieces = ATTACKS[name].draws
        self.batches = CraftingBatch(int(batch_size), bool(auto_batch))
        self.precision, self.channels_last = precision, bool(channels_last)

    def predict_step(self, batch, batch_idx):
        images, labels, batch_id = batch
        cuda = [images.device.index or 0] if images.device.type == "cuda" else []
        targets = None
        if self.goal != "untargeted":
            generator = torch.Generator().manual_seed(batch_seed(self.seed, int(batch_id)))
            targets = surrogate_targets(self.surrogate, images, labels, self.goal, self.task, generator,
                                        self.label_names).to(images.device)

        def attack(start: int, stop: int) -> torch.Tensor:
            torch.manual_seed(piece_seed(self.seed, int(batch_id), start))
            return craft(self.surrogate, images[start:stop], labels[start:stop], self.setting, self.task,
                         precision=self.precision, channels_last=self.channels_last,
                         targets=None if targets is None else targets[start:stop])

        with torch.random.fork_rng(devices=cuda):
            adversarial = self.batches.map(attack, len(images), self.pieces)
        return (images, adversarial) if targets is None else (images, adversarial, targets)


def all_gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """`tensor` of every process of the default process group, in rank order."""
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return gathered


def gather_batches(batch_id: int, parts: tuple[torch.Tensor, ...]):
    """Every process's (batch id, parts) of one step; the processes' batches may differ in length."""
    device = parts[0].device
    header = torch.stack(all_gather(torch.tensor([batch_id, len(parts[0])], device=device))).tolist()
    longest, gathered = max(count for _, count in header), []
    for part in parts:
        gathered.append(all_gather(torch.cat([part, part.new_zeros((longest - len(part), *part.shape[1:]))])))
    return [batch_id for batch_id, _ in header], [
        tuple(g[rank][:count].clone() for g in gathered) for rank, (_, count) in enumerate(header)]
