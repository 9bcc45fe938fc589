"""One loss adapter so every torchattacks attack works for every task layout.

torchattacks computes softmax cross-entropy on `model(x)` and the labels. Softmax over the pair
(0, z) gives sigmoid(z) for the second entry, so presenting a single logit z as the two logits
(0, z) turns that softmax cross-entropy into exactly the sigmoid cross-entropy of z. A multi-label
model's L logits become an (N, 2, L) tensor, which `nn.CrossEntropyLoss` treats as L per-label
two-class problems and averages: the mean sigmoid cross-entropy over labels.
"""
from __future__ import annotations

import torch
from torch import nn

TASKS = ("binary", "multiclass", "multilabel")


class CrossEntropyView(nn.Module):
    """Wraps a model that follows the model contract so its logits suit softmax cross-entropy."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        self.model, self.task = model, task

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model(images)
        if self.task == "multiclass":
            return logits
        if self.task == "binary":
            logits = logits.reshape(len(logits))
        return torch.stack([torch.zeros_like(logits), logits], dim=1)


def attack_labels(labels: torch.Tensor, task: str) -> torch.Tensor:
    """Labels as torchattacks expects them: class indices (N,), or per-label 0/1 indices (N, L)."""
    return labels.long().reshape(-1) if task != "multilabel" else labels.long()
