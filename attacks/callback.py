"""Work per `trainer.predict` batch, gathered from every process and handed on in batch order.

A predict loader yields numbered batches `(images, ..., batch_id)` (`experiments.batches`); under
DDP each process gets its own share of the batch ids, the same number of steps each (a process
short of batches repeats its last one). After every step the processes' results are gathered, and
the main process hands each batch's result once, in batch-id order, to `sink(batch_id, *tensors)`:
the whole set never has to be in memory, and one process writes it.
"""
from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from .batching import CraftingBatch
from .craft import craft
from .noise import control_noise
from .registry import attack_params

Sink = Callable[..., None]


def batch_seed(seed: int, batch_id: int) -> int:
    """The seed of one batch's random draws, so a batch crafts the same wherever it runs."""
    return (int(seed) * 1_000_003 + int(batch_id)) % 2**63


class BatchGather(pl.Callback):
    """Hands each predict batch's `compute` result (default: `predict_step`'s output) to `sink` on the
    main process, in batch order; `sink` stays None on the other processes."""

    def __init__(self, sink: Sink | None = None):
        super().__init__()
        self.sink, self.next_id = sink, 0

    def __getstate__(self) -> dict:  # sent to the other processes without the main process's sink
        return {**self.__dict__, "sink": None}

    def on_predict_start(self, trainer, pl_module) -> None:
        self.next_id = 0

    def compute(self, pl_module, outputs, batch) -> tuple[torch.Tensor, ...]:
        return (outputs,)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        batch_id = int(batch[-1])
        parts = self.compute(pl_module, outputs, batch)
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


class CraftingCallback(BatchGather):
    """Crafts an adversarial set during `trainer.predict`: `sink(batch_id, adversarial, control)` gets
    each batch's adversarial images and control noise (`attacks.control_noise`).

    Batches are `(images, labels, batch_id)`. The attacked model is `surrogate`, or the predicted
    LightningModule itself; each batch's random draws (random starts, input diversity, the control
    noise) come from `batch_seed(seed, batch_id)`, so a set is the same byte for byte whether one
    process or several craft it. `batch_size`, `auto_batch`, `precision` and `channels_last` are
    the `crafting` speed options.
    """

    def __init__(self, setting: dict, task: str, seed: int = 0, sink: Sink | None = None,
                 surrogate: nn.Module | None = None, *, batch_size: int = 0, auto_batch: bool = True,
                 precision: str = "fp32", channels_last: bool = False):
        super().__init__(sink)
        attack_params(setting)
        self.setting, self.task, self.seed, self.surrogate = setting, task, int(seed), surrogate
        self.batches = CraftingBatch(int(batch_size), bool(auto_batch))
        self.precision, self.channels_last = precision, bool(channels_last)

    def compute(self, pl_module, outputs, batch) -> tuple[torch.Tensor, ...]:
        images, labels, batch_id = batch
        seed = batch_seed(self.seed, int(batch_id))
        torch.manual_seed(seed)
        model = self.surrogate if self.surrogate is not None else pl_module
        adversarial = self.batches.map(lambda i, j: craft(
            model, images[i:j], labels[i:j], self.setting, self.task, precision=self.precision,
            channels_last=self.channels_last), len(images))
        return adversarial, control_noise(images, adversarial, torch.Generator().manual_seed(seed))


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
