"""Scores and adversarial sets through Lightning's `Trainer.predict` on the study's crafting devices.

`crafting.device: auto` predicts with the trainer's accelerator, devices, strategy and precision
(every device of a multi-device study, each process taking its share of the batches); `cpu`,
`cuda`, `cuda:N` or `mps` predict on that one device in the main process. A set is crafted as the
predictions of an `attacks.CraftingModule` around the surrogate; scores are a classifier's own
predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from attacks import BatchGather, CraftingModule

from medcommon.console import stage_bar
from .predict_batches import rank_loader
from .devices import Process
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


@dataclass
class PredictJob:
    """One `Trainer.predict` of `module` over numbered `batches`, `BatchGather` handing the results on."""
    settings: dict
    module: pl.LightningModule
    batches: Dataset
    distributed: bool  # every process of the study's device group takes its share
    num_workers: int = 0

    def run(self, process: Process, sink: Callable | None = None) -> None:
        rank, world = (process.rank, process.world) if self.distributed else (0, 1)
        trainer, gather = predict_trainer(process, self.settings, self.distributed)
        gather.sink = sink
        loader = rank_loader(self.batches.on(process), rank, world, self.num_workers)
        try:
            interruptible(trainer.predict, self.module, loader, return_predictions=False)
        finally:
            gather.sink = None


def predict_trainer(process: Process, settings: dict, distributed: bool) -> tuple[pl.Trainer, BatchGather]:
    """The process's predict Trainer for these settings and its `BatchGather`, built once and kept
    (`Process.kept`): building a Trainer costs tens of milliseconds, as much as crafting a small set."""
    key = ("predict", repr(sorted(settings.items())), distributed)
    if key not in process.kept:
        gather = BatchGather()
        process.kept[key] = pl.Trainer(
            **settings, plugins=process.plugins(distributed), callbacks=[gather, *process.callbacks()], logger=False,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, inference_mode=False,
            use_distributed_sampler=False), gather
    return process.kept[key]


class Predictor:
    """The study's predictions on its device group (a `DeviceGroup`, or this process alone): model
    scores and adversarial sets, batch by batch in order."""

    def __init__(self, cfg: DictConfig, group: Process):
        self.cfg, self.group = cfg, group
        self.distributed = str(cfg.crafting.device) == "auto" and group.world > 1
        self.settings = predict_settings(cfg, self.distributed)

    def _run(self, module: pl.LightningModule, batches: Dataset, sink: Callable) -> None:
        if self.distributed:  # sent to the followers from the CPU; each puts it on its own device
            module = module.cpu()
        self.group.run(PredictJob(self.settings, module, batches, self.distributed, int(self.cfg.data.num_workers)),
                       sink=sink)

    def scores(self, module: pl.LightningModule, batches: Dataset) -> torch.Tensor:
        """The module's scores (`predict_step`) on every batch, in order, on the CPU."""
        parts = []
        self._run(module, batches, lambda batch_id, scores: parts.append(scores.float()))
        return torch.cat(parts)

    def set_scores(self, module: pl.LightningModule, batches: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores on an adversarial set's `SetBatches` (adversarial images, then their control noise):
        (adversarial scores, control scores)."""
        adversarial, control = [], []

        def sink(batch_id: int, scores: torch.Tensor) -> None:
            half = len(scores) // 2
            adversarial.append(scores[:half].float())
            control.append(scores[half:].float())
        self._run(module, batches, sink)
        return torch.cat(adversarial), torch.cat(control)

    def queries(self, module: pl.LightningModule, batches: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """A query attack's (`attacks.queries.QueryModule`) per-image queries and successes, in order."""
        spent, fooled = [], []

        def sink(batch_id: int, queries: torch.Tensor, success: torch.Tensor) -> None:
            spent.append(queries)
            fooled.append(success)
        self._run(module, batches, sink)
        return torch.cat(spent), torch.cat(fooled)

    def adversarial_set(self, surrogate: torch.nn.Module, batches: Dataset, setting: dict, seed: int, task: str,
              write: Callable[..., None], label: str, label_names: list[str] | None = None) -> None:
        """Craft the set on `surrogate` (a classifier, or a plain model such as an ensemble, which the
        attack then sees as it is) batch by batch, `write(clean, adversarial)` in batch order
        (`write(clean, adversarial, targets)` for a targeted setting)."""
        crafting = self.cfg.crafting
        module = CraftingModule(surrogate, setting, task, seed, batch_size=crafting.batch_size,
                                auto_batch=crafting.auto_batch, precision=crafting.precision,
                                channels_last=crafting.channels_last, label_names=label_names)
        with stage_bar([], label, total=len(batches), unit="batch") as bar:
            def sink(batch_id: int, clean: torch.Tensor, adversarial: torch.Tensor, *targets: torch.Tensor) -> None:
                write(clean, adversarial, *targets)
                bar.update()
            self._run(module, batches, sink)
