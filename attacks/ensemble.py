"""Surrogate ensembles: several models attacked as one."""
from __future__ import annotations

import torch
from torch import nn

MODES = ("logits", "loss")


class Ensemble(nn.Module):
    """Models with the same logit layout, attacked as one.

    Its output is always the mean of the members' logits, so it follows the model contract. With
    `mode="logits"` attacks use that output; with `mode="loss"` the attack loss is the mean of the
    members' own losses instead (see `attacks.adapter.CrossEntropyView`).
    """

    def __init__(self, models, mode: str = "logits"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"ensemble: unknown mode {mode!r}; valid: {', '.join(MODES)}")
        self.members = nn.ModuleList(models)
        if len(self.members) == 0:
            raise ValueError("ensemble: needs at least one model")
        self.mode = mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(images) for member in self.members]).mean(dim=0)


def ensemble(models, mode: str = "logits") -> Ensemble:
    """Several surrogates as one model: mean of their logits (`logits`) or of their losses (`loss`)."""
    return Ensemble(models, mode)
