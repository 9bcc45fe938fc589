"""Adversarial sets crafted and measured batch by batch, so no whole set is ever held in memory."""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.image import structural_similarity_index_measure

from attacks import control_noise, craft
from lightning_modules.tasks import scores


class CraftingBatch:
    """Splits each batch into sub-batches of at most `size` images (0 = the whole batch); with `auto`,
    a sub-batch that runs out of device memory is retried at half the size, which is then kept."""

    def __init__(self, size: int = 0, auto: bool = True):
        if size < 0:
            raise ValueError(f"crafting.batch_size: {size} must be >= 0 (0 = data.batch_size)")
        self.size, self.auto = size, auto

    def map(self, fn: Callable[[int, int], torch.Tensor], count: int) -> torch.Tensor:
        """`fn(start, stop)` over consecutive sub-batches of `count` items, concatenated."""
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


def craft_set(model: torch.nn.Module, loader: DataLoader, task: str, setting: dict, seed: int,
              crafting) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(adversarial, control noise) chunks, one per batch of `loader`, on the CPU.

    `crafting`: batch_size, auto_batch, precision, channels_last and device (the study's `crafting`
    config). Control noise is drawn on the CPU from `seed`, so it does not depend on the device.
    """
    device, generator = torch.device(crafting.device), torch.Generator().manual_seed(seed)
    batches = CraftingBatch(int(crafting.batch_size), bool(crafting.auto_batch))
    model.to(device)
    for images, labels in loader:
        on_device, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        adversarial = batches.map(lambda i, j: craft(
            model, on_device[i:j], labels[i:j], setting, task, precision=crafting.precision,
            channels_last=crafting.channels_last), len(images)).cpu()
        yield adversarial, control_noise(images, adversarial, generator)


@torch.inference_mode()
def predict(model: torch.nn.Module, batches: Iterable[torch.Tensor], task: str,
            device: str | torch.device = "cpu") -> torch.Tensor:
    """The model's scores (probabilities) for a stream of image batches, on the CPU."""
    model.to(device)
    return torch.cat([scores(task, model(images.to(device, non_blocking=True))).float().cpu()
                      for images in batches])


class PerturbationTotals:
    """`attacks.perturbation_metrics` of a whole set, accumulated chunk by chunk: mean per-image
    L-inf, L2 and SSIM, and the PSNR of the mean squared error over all pixels."""

    def __init__(self):
        self.images, self.elements, self.squared = 0, 0, 0.0
        self.sums = {"linf": 0.0, "l2": 0.0, "ssim": 0.0}

    def add(self, clean: torch.Tensor, adv: torch.Tensor) -> None:
        delta = (adv - clean).flatten(1).double()
        self.sums["linf"] += float(delta.abs().amax(dim=1).sum())
        self.sums["l2"] += float(delta.norm(dim=1).sum())
        self.sums["ssim"] += float(structural_similarity_index_measure(adv, clean, data_range=1.0,
                                                                       reduction="none").double().sum())
        self.squared += float(delta.square().sum())
        self.images, self.elements = self.images + len(adv), self.elements + delta.numel()

    def result(self) -> dict[str, float]:
        if self.images == 0:
            raise ValueError("perturbation metrics: the adversarial set is empty")
        means = {name: total / self.images for name, total in self.sums.items()}
        mse = self.squared / self.elements
        return {**means, "psnr": math.inf if mse == 0 else -10.0 * math.log10(mse)}
