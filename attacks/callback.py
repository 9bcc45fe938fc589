"""Crafting inside Lightning: a callback that attacks every predict/test batch, DDP included."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import Dataset

from .craft import craft
from .registry import attack_params


class IndexedDataset(Dataset):
    """(image, label, sample index) items, so a crafted set can be put back in sample order."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index][:2]
        return image, label, index


class CraftingCallback(pl.Callback):
    """Crafts adversarial images for each batch of `trainer.predict` or `trainer.test`.

    Batches are (images, labels) or (images, labels, sample indices); indices are required under
    DDP, where each rank crafts its shard. At the end, `adversarial` holds the whole set in sample
    order on every rank (duplicates from a padded sampler dropped) and `indices` the sample indices.
    The attacked model is `surrogate`, or the LightningModule itself when that is None.
    """

    def __init__(self, attack_cfg, task: str, surrogate: nn.Module | None = None):
        super().__init__()
        attack_params(attack_cfg)
        self.attack_cfg, self.task, self.surrogate = attack_cfg, task, surrogate
        self.adversarial: torch.Tensor | None = None
        self.indices: torch.Tensor | None = None
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        self.parts = []

    def on_test_start(self, trainer, pl_module) -> None:
        self.parts = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.craft_batch(trainer, pl_module, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.craft_batch(trainer, pl_module, batch)

    def on_predict_end(self, trainer, pl_module) -> None:
        self.gather(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self.gather(trainer)

    def craft_batch(self, trainer, pl_module, batch) -> None:
        images, labels = batch[0], batch[1]
        if len(batch) > 2:
            indices = batch[2]
        elif trainer.world_size > 1:
            raise ValueError("CraftingCallback: under DDP batches need sample indices (wrap the dataset in "
                             "attacks.IndexedDataset)")
        else:
            start = sum(len(part) for part, _ in self.parts)
            indices = torch.arange(start, start + len(images))
        model = self.surrogate if self.surrogate is not None else pl_module
        adversarial = craft(model, images, labels, self.attack_cfg, self.task)
        self.parts.append((indices.detach().long().to(adversarial.device).clone(), adversarial))

    def gather(self, trainer) -> None:
        indices = torch.cat([index for index, _ in self.parts])
        adversarial = torch.cat([images for _, images in self.parts])
        if trainer.world_size > 1:
            indices, adversarial = gather_uneven(trainer.strategy, indices, adversarial)
        order = indices.argsort()
        indices, adversarial = indices[order], adversarial[order]
        keep = torch.ones_like(indices, dtype=torch.bool)
        keep[1:] = indices[1:] != indices[:-1]
        self.indices, self.adversarial = indices[keep].cpu(), adversarial[keep].cpu()
        self.parts = []


def gather_uneven(strategy, indices: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' (indices, images), concatenated; shards may differ in length."""
    counts = strategy.all_gather(torch.tensor([len(indices)], device=indices.device)).reshape(-1)
    longest = int(counts.max())
    pad = longest - len(indices)
    indices = torch.cat([indices, indices.new_zeros(pad)])
    images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
    all_indices, all_images = strategy.all_gather(indices), strategy.all_gather(images)
    valid = torch.arange(longest, device=counts.device)[None, :] < counts[:, None]
    return all_indices[valid], all_images[valid]
