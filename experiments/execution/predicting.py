"""Scores and adversarial sets through Lightning's `Trainer.predict` on the study's crafting devices.

`crafting.device: auto` predicts with the trainer's accelerator, devices, strategy and precision
(every device of a multi-device study, each process taking its share of the batches); `cpu`,
`cuda`, `cuda:N` or `mps` predict on that one device in the main process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.utils.data import Dataset

from attacks import BatchGather, CraftingCallback
from lightning_modules import tasks

from .batches import rank_loader
from ..console import stage_bar
from ..design.resources import world_size
from .devices import run_job
from .training import interruptible


def predict_settings(cfg: DictConfig, distributed: bool) -> dict:
    """The predict Trainer's device options for the study's `crafting.device` (`distributed`: on
    every device of the study's device group)."""
    device = str(cfg.crafting.device)
    if device == "auto":
        return {"accelerator": cfg.trainer.accelerator, "devices": cfg.trainer.devices if distributed else 1,
                "strategy": cfg.trainer.strategy if distributed else "auto", "precision": cfg.trainer.precision}
    accelerator, _, index = device.partition(":")
    devices = [int(index)] if index else 1
    return {"accelerator": "gpu" if accelerator == "cuda" else accelerator, "devices": devices,
            "precision": cfg.trainer.precision}


class Carrier(pl.LightningModule):
    """A plain model (an ensemble surrogate) carried through `Trainer.predict`."""

    def __init__(self, model: torch.nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def predict_step(self, batch, batch_idx):
        return tasks.scores(self.task, self(batch[0]))


@dataclass
class PredictJob:
    """One `Trainer.predict` of `module` over numbered `batches`, `callback` handing the results on."""
    settings: dict
    module: pl.LightningModule
    batches: Dataset
    callback: BatchGather
    distributed: bool  # every process of the study's device group takes its share
    num_workers: int = 0

    def run(self, sink: Callable | None = None) -> None:
        self.callback.sink = sink
        rank, world = (dist.get_rank(), dist.get_world_size()) if self.distributed else (0, 1)
        trainer = pl.Trainer(**self.settings, callbacks=[self.callback], logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, inference_mode=False,
                             use_distributed_sampler=False)
        interruptible(trainer.predict, self.module, rank_loader(self.batches, rank, world, self.num_workers),
                      return_predictions=False)


class Predictor:
    """The study's predictions: model scores and adversarial sets, batch by batch in order."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.distributed = cfg, str(cfg.crafting.device) == "auto" and world_size(cfg) > 1
        self.settings = predict_settings(cfg, self.distributed)

    def _run(self, module: pl.LightningModule, batches: Dataset, callback: BatchGather, sink: Callable) -> None:
        if self.distributed:  # sent to the followers from the CPU; each puts it on its own device
            module = module.cpu()
        job = PredictJob(self.settings, module, batches, callback, self.distributed, int(self.cfg.data.num_workers))
        run_job(job, sink=sink)

    def scores(self, module: pl.LightningModule, batches: Dataset) -> torch.Tensor:
        """The module's scores (`predict_step`) on every batch, in order, on the CPU."""
        parts = []
        self._run(module, batches, BatchGather(), lambda batch_id, scores: parts.append(scores.float()))
        return torch.cat(parts)

    def set_scores(self, module: pl.LightningModule, batches: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores on an adversarial set's `SetBatches` (adversarial images, then their control noise):
        (adversarial scores, control scores)."""
        adversarial, control = [], []

        def sink(batch_id: int, scores: torch.Tensor) -> None:
            half = len(scores) // 2
            adversarial.append(scores[:half].float())
            control.append(scores[half:].float())
        self._run(module, batches, BatchGather(), sink)
        return torch.cat(adversarial), torch.cat(control)

    def craft(self, module: torch.nn.Module, batches: Dataset, setting: dict, seed: int, task: str,
              write: Callable[[torch.Tensor, torch.Tensor], None], label: str) -> None:
        """Craft the set on `module` (a LightningModule, or a plain model such as an ensemble, which
        the attack then sees as it is) batch by batch, `write(adversarial, control)` in batch order."""
        crafting, surrogate = self.cfg.crafting, None
        if not isinstance(module, pl.LightningModule):
            module, surrogate = Carrier(module, task), module
        callback = CraftingCallback(setting, task, seed, surrogate=surrogate, batch_size=crafting.batch_size,
                                    auto_batch=crafting.auto_batch, precision=crafting.precision,
                                    channels_last=crafting.channels_last)
        with stage_bar([], label, total=len(batches), unit="batch") as bar:
            def sink(batch_id: int, adversarial: torch.Tensor, control: torch.Tensor) -> None:
                write(adversarial, control)
                bar.update()
            self._run(module, batches, callback, sink)
