"""`craft`: adversarial images for any model that follows the model contract."""
from __future__ import annotations

import torch
from torch import nn

from .adapter import CrossEntropyView, attack_labels
from .registry import make_attack


def craft(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_cfg, task: str) -> torch.Tensor:
    """Untargeted attack on the cross-entropy of the true labels; returns images in [0, 1].

    `labels`: class indices for binary and multiclass, a 0/1 matrix for multilabel. Gradients are
    enabled here even when called under Lightning's inference mode.
    """
    attack = make_attack(CrossEntropyView(model, task), attack_cfg)
    with torch.inference_mode(False), torch.enable_grad():
        return attack(images.clone(), attack_labels(labels, task).clone()).detach()
