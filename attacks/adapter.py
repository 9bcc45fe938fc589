"""One loss adapter so every torchattacks attack works for every task layout.

torchattacks computes softmax cross-entropy on `model(x)` and the labels. Softmax over the pair
(0, z) gives sigmoid(z) for the second entry, so presenting a single logit z as the two logits
(0, z) turns that softmax cross-entropy into exactly the sigmoid cross-entropy of z. A multi-label
model's L logits become an (N, 2, L) tensor, which `nn.CrossEntropyLoss` treats as L per-label
two-class problems and averages: the mean sigmoid cross-entropy over labels.

A loss-mode `Ensemble` of K members is presented with a trailing member axis (and its labels
repeated along it), so the same averaging cross-entropy becomes the mean of the members' losses.
"""
from __future__ import annotations

import torch
from torch import nn

from lightning_modules.tasks import check_task

from .ensemble import Ensemble


def loss_members(model: nn.Module) -> int:
    """How many losses the attack loss averages: K for a loss-mode ensemble, else 0 (one model)."""
    return len(model.members) if isinstance(model, Ensemble) and model.mode == "loss" else 0


class CrossEntropyView(nn.Module):
    """Wraps a model that follows the model contract so its logits suit softmax cross-entropy."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, check_task(task)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if loss_members(self.model):
            return torch.stack([self.view(member(images)) for member in self.model.members], dim=-1)
        return self.view(self.model(images))

    def __repr__(self) -> str:
        # torchattacks calls str(model) whenever an attack is built: the full repr of a large network
        # costs milliseconds on every `craft` call.
        return f"CrossEntropyView(task={self.task!r}, model={type(self.model).__name__})"

    def view(self, logits: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            return logits
        if self.task == "binary":
            logits = logits.reshape(len(logits))
        return torch.stack([torch.zeros_like(logits), logits], dim=1)


def attack_labels(labels: torch.Tensor, task: str, members: int = 0) -> torch.Tensor:
    """Labels as torchattacks expects them: class indices (N,), or per-label 0/1 indices (N, L);
    with a trailing member axis of length `members` when that is > 0."""
    labels = labels.long().reshape(-1) if check_task(task) != "multilabel" else labels.long()
    return labels.unsqueeze(-1).expand(*labels.shape, members) if members else labels
