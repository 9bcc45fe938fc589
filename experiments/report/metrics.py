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


def asr_counts(task: str, labels: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor) -> dict[str, tuple]:
    """Per image, the counts behind both attack success rates, as (hits, counted) float64 vectors:
    `asr_correct` (decisions the attack flips among the clean-correct ones) and `asr_all` (decisions
    wrong after the attack among all decisions); a decision is one per image, one per image and
    label for multilabel."""
    truth = labels.long()
    clean_pred, adv_pred = predictions(task, clean), predictions(task, adv)
    correct, wrong = (clean_pred == truth).reshape(len(truth), -1), (adv_pred != truth).reshape(len(truth), -1)
    return {"asr_correct": ((correct & wrong).sum(1).double(), correct.sum(1).double()),
            "asr_all": (wrong.sum(1).double(), torch.full((len(truth),), float(wrong.shape[1]), dtype=torch.float64))}


def rate(hits: torch.Tensor, counted: torch.Tensor) -> float:
    """sum(hits) / sum(counted); NaN when nothing is counted."""
    total = float(counted.sum())
    return float(hits.sum()) / total if total else float("nan")
