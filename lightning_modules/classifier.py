"""The LightningModule: trains a pixel-space classifier and reports AUROC per stage."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torchmetrics.classification import BinaryAUROC, MulticlassAUROC, MultilabelAUROC

from . import tasks
from .model import build_classifier


def auroc_metric(task: str, num_outputs: int):
    """torchmetrics AUROC for a task layout (multiclass and multilabel: macro mean over classes)."""
    if task == "binary":
        return BinaryAUROC()
    if task == "multilabel":
        return MultilabelAUROC(num_labels=num_outputs, average="macro")
    return MulticlassAUROC(num_classes=num_outputs, average="macro")


class ClassifierModule(pl.LightningModule):
    """Wraps `build_classifier(...)`; `self.model` is the plain nn.Module that attacks see."""

    def __init__(self, arch: str, init: str, task: str, num_outputs: int, in_chans: int,
                 lr: float = 1e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.save_hyperparameters()
        self.task = tasks.check_task(task)
        self.model = build_classifier(arch, init, task, num_outputs, in_chans)
        self.val_auroc = auroc_metric(task, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = tasks.loss(self.task, self(images), labels)
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self(images)
        self.log("val_loss", tasks.loss(self.task, logits, labels), prog_bar=True, sync_dist=True)
        self.val_auroc.update(tasks.scores(self.task, logits), labels.long())
        self.log("val_auc", self.val_auroc, prog_bar=True)

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return tasks.scores(self.task, self(images))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
