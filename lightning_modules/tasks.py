"""Task layouts (docs/architecture.md): how logits, labels, losses and scores relate for each task;
the one list of tasks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TASKS = ("binary", "multiclass", "multilabel")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    return task


def num_logits(task: str, num_classes: int) -> int:
    """binary: one logit; multiclass: one per class; multilabel: one per label."""
    return 1 if check_task(task) == "binary" else num_classes


def loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true labels: sigmoid for binary and multilabel, softmax for multiclass."""
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float())
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels.long())


def scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities: (N,) for binary, (N, C) for multiclass and multilabel."""
    if task == "binary":
        return torch.sigmoid(logits.squeeze(1))
    if task == "multilabel":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def predictions(task: str, probs: torch.Tensor) -> torch.Tensor:
    """Hard decisions from `scores`: threshold 0.5 (binary, per label) or arg-max (multiclass)."""
    if task == "multiclass":
        return probs.argmax(dim=1)
    return (probs >= 0.5).long()
