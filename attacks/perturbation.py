"""Size of a perturbation: L-inf, L2, SSIM and PSNR of an adversarial set against its clean images."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def perturbation_metrics(clean: torch.Tensor, adv: torch.Tensor) -> dict[str, float]:
    """Mean per-image L-inf and L2 norms of the perturbation, SSIM and PSNR (data range 1)."""
    delta = (adv - clean).flatten(1)
    return {
        "linf": float(delta.abs().amax(dim=1).mean()),
        "l2": float(delta.norm(dim=1).mean()),
        "ssim": float(structural_similarity_index_measure(adv, clean, data_range=1.0)),
        "psnr": float(peak_signal_noise_ratio(adv, clean, data_range=1.0)),
    }
