"""The LightningModule: trains a pixel-space classifier and reports AUROC and accuracy per stage."""
from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (BinaryAccuracy, BinaryAUROC, MulticlassAccuracy, MulticlassAUROC,
                                         MultilabelAccuracy, MultilabelAUROC)

from . import tasks
from .model import build_classifier


def stage_metrics(task: str, num_outputs: int, stage: str) -> MetricCollection:
    """`<stage>_auc` (multiclass and multilabel: macro mean over classes) and `<stage>_acc`
    (fraction of correct decisions; multilabel: over all label decisions) from `tasks.scores`."""
    if task == "binary":
        metrics = {"auc": BinaryAUROC(), "acc": BinaryAccuracy()}
    elif task == "multilabel":
        metrics = {"auc": MultilabelAUROC(num_labels=num_outputs, average="macro"),
                   "acc": MultilabelAccuracy(num_labels=num_outputs, average="micro")}
    else:
        metrics = {"auc": MulticlassAUROC(num_classes=num_outputs, average="macro"),
                   "acc": MulticlassAccuracy(num_classes=num_outputs, average="micro")}
    return MetricCollection(metrics, prefix=f"{stage}_")


class ClassifierModule(pl.LightningModule):
    """Wraps `build_classifier(...)`; `self.model` is the plain nn.Module that attacks see.

    Logs `<stage>_loss`, `<stage>_auc` and `<stage>_acc` per epoch for train, val and test;
    the metrics are synchronised across processes, so under DDP they cover the whole set.

    `adversary(model, images, labels) -> images` (e.g. `attacks.craft` with an attack setting) turns
    on adversarial training: each training batch is replaced by adversarial examples crafted on the
    model as it is at that step (Madry et al.), and validation also logs `val_adv_loss`,
    `val_adv_auc`, `val_adv_acc` on examples crafted from the validation images. Early stopping and
    the kept checkpoint still follow the clean `val_auc`.
    """

    def __init__(self, arch: str, init: str, task: str, num_outputs: int, in_chans: int,
                 lr: float = 1e-3, weight_decay: float = 1e-4,
                 adversary: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["adversary"])
        self.task = tasks.check_task(task)
        self.model = build_classifier(arch, init, task, num_outputs, in_chans)
        self.adversary = adversary
        self.train_metrics = stage_metrics(task, num_outputs, "train")
        self.val_metrics = stage_metrics(task, num_outputs, "val")
        self.test_metrics = stage_metrics(task, num_outputs, "test")
        if self.adversary is not None:
            self.val_adv_metrics = stage_metrics(task, num_outputs, "val_adv")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def attacked(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial examples of `images` crafted on the model now (adversarial training)."""
        return self.adversary(self.model, images, labels)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels = batch
        if self.adversary is not None and stage == "train":
            images = self.attacked(images, labels)
        logits = self(images)
        loss = tasks.loss(self.task, logits, labels)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(tasks.scores(self.task, logits.detach()), labels.long())
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=len(images))
        self.log_dict(metrics, prog_bar=stage != "train", on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")
        if self.adversary is not None:
            images, labels = batch
            self._step((self.attacked(images, labels), labels), "val_adv")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return tasks.scores(self.task, self(images))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                 weight_decay=self.hparams.weight_decay)
