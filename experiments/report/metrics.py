"""Attack-performance metrics (perturbation metrics live in `attacks.perturbation`)."""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc, multiclass_auroc, multilabel_auroc

from lightning_modules.tasks import predictions


def auc(task: str, labels: torch.Tensor, probs: torch.Tensor) -> float:
    """ROC AUC; mean of per-class (multiclass, one-vs-rest) or per-label (multilabel) AUCs."""
    if task == "binary":
        return float(binary_auroc(probs, labels.long()))
    if task == "multilabel":
        return float(multilabel_auroc(probs, labels.long(), num_labels=probs.shape[1], average="macro"))
    return float(multiclass_auroc(probs, labels.long(), num_classes=probs.shape[1], average="macro"))


def attack_success_rate(task: str, labels: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor) -> float:
    """Fraction of clean-correct decisions (per sample; per sample and label for multilabel) that
    the attack flips."""
    truth = labels.long()
    clean_pred, adv_pred = predictions(task, clean), predictions(task, adv)
    correct = clean_pred == truth
    if int(correct.sum()) == 0:
        return float("nan")
    return float((adv_pred[correct] != truth[correct]).float().mean())
