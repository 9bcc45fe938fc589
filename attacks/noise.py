"""The baseline of the same size as an attack: control noise."""
from __future__ import annotations

import torch


def control_noise(clean: torch.Tensor, adversarial: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The perturbation `adversarial - clean`, its elements shuffled across all pixels and channels
    of each image independently, added to the clean image and clipped to [0, 1]."""
    delta = (adversarial - clean).flatten(1)
    keys = torch.rand(delta.shape, generator=generator, device="cpu").to(delta.device)
    shuffled = delta.gather(1, keys.argsort(dim=1))
    return (clean + shuffled.view_as(clean)).clamp(0.0, 1.0)
