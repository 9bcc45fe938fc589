"""Measuring one target on one adversarial set: pure functions of tensors, no tracking, no caching."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.image import structural_similarity_index_measure

from ..report.bootstrap import PairedBootstrap
from attacks.targets import targeted_hits

from ..report.metrics import asr_counts, auc, rate
from ..report.tables import CI_COLUMNS, RATES

# The metrics of one pair evaluation (a pair run's MLflow metrics and a result row's numbers).
PAIR_METRICS = ("auc_clean", "auc_adv", "auc_control", "auc_pct_clean", *RATES, "linf", "l2", "ssim", "psnr",
                *CI_COLUMNS, "craft_seconds", "eval_seconds")
Chunks = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TestSet:
    """The test split: labels and sample ids in memory, images streamed batch by batch from `loader`."""

    loader: DataLoader
    labels: torch.Tensor
    task: str
    label_names: list[str]
    sample_ids: list

    def batches(self) -> Iterator[torch.Tensor]:
        return (images for images, _ in self.loader)


@dataclass
class PairScores:
    """A pair's metrics and the target's per-sample scores on adversarial and control images."""
    metrics: dict[str, float]
    adversarial: torch.Tensor
    control: torch.Tensor


def load_test_set(data) -> TestSet:
    """The shared test split of a development-set datamodule."""
    data.setup()
    indices = data.indices["test"]
    return TestSet(data.test_dataloader(), data.labels[torch.as_tensor(indices)], data.task, data.label_names,
                   [int(i) for i in indices])


class PerturbationTotals:
    """The perturbation size of a whole set, accumulated chunk by chunk: mean per-image
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


def set_distortion(clean_batches: Iterable[torch.Tensor], chunks: Chunks) -> dict[str, float]:
    """Perturbation size of an adversarial set against its clean test batches (linf, l2, ssim, psnr)."""
    totals = PerturbationTotals()
    for clean, (adv, _) in zip(clean_batches, chunks, strict=True):
        totals.add(clean, adv)
    return totals.result()


def evaluate_pair(test: TestSet, clean: torch.Tensor, adv_probs: torch.Tensor, ctrl_probs: torch.Tensor,
                  bootstrap: PairedBootstrap | None = None, targets: torch.Tensor | None = None) -> PairScores:
    """AUCs of a target from its scores on clean, adversarial and control images, the attack success
    rates over clean-correct decisions (`asr_correct`) and over all decisions (`asr_all`), AUC as %
    of clean, with the attacker's `targets` (a targeted set's, `attacks.targets`) the targeted
    success rate over the images that have a target (NaN without), and, with `bootstrap`, the
    paired-bootstrap intervals."""
    metrics = {
        "auc_clean": auc(test.task, test.labels, clean),
        "auc_adv": auc(test.task, test.labels, adv_probs),
        "auc_control": auc(test.task, test.labels, ctrl_probs),
    }
    counts = asr_counts(test.task, test.labels, clean, adv_probs)
    if targets is not None:
        counts["targeted_success"] = targeted_hits(test.task, test.labels, adv_probs, targets)
    metrics.update({name: rate(*counts[name]) if name in counts else float("nan") for name in RATES})
    # a target whose clean AUC is 0 (every test image ranked the wrong way) has no % of clean
    metrics["auc_pct_clean"] = 100.0 * metrics["auc_adv"] / metrics["auc_clean"] if metrics["auc_clean"] else float("nan")
    intervals = {c: float("nan") for c in CI_COLUMNS}
    if bootstrap:
        intervals.update(bootstrap.interval(adv_probs.numpy()))
        intervals.update(bootstrap.rate_intervals({name: (h.numpy(), c.numpy()) for name, (h, c) in counts.items()}))
    return PairScores({**metrics, **intervals}, adv_probs, ctrl_probs)
