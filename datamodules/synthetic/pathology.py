"""H&E-like pathology patches; label = metastatic (tumour) nuclei in the patch centre (PCam-like)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .render import render_ellipses, smooth_field

# Optical-density stain vectors (haematoxylin, eosin) of a typical H&E slide; "labs" perturb them.
HEMATOXYLIN = (0.65, 0.70, 0.29)
EOSIN = (0.07, 0.99, 0.11)


def generate_pathology(num_patients: int, patches_per_patient: int, size: int, seed: int,
                       num_labs: int = 4, signal: float = 1.0):
    """Return uint8 images (N, 3, size, size), labels (N,), patient ids (N,).

    Every patch has normal nuclei spread over stroma; a tumour patch adds larger, darker, crowded,
    irregular nuclei in its centre region (the central half), their number and contrast scaled by a
    per-patch random amount times `signal`. Stain vectors and intensity vary per lab (per patient).
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_patients * patches_per_patient
    patient = np.repeat(np.arange(num_patients), patches_per_patient)
    labels = (torch.rand(n, generator=gen) < 0.5).long()
    scale = size / 32.0

    # normal nuclei: everywhere, small and round; a few mimics (large nuclei) in any patch
    k_norm = int(18 * scale * scale) + 4
    centres = torch.rand(n, k_norm, 2, generator=gen) * size
    radii = (0.9 + 0.5 * torch.rand(n, k_norm, generator=gen)) * scale
    aspect = 1.0 + 0.2 * torch.rand(n, k_norm, generator=gen)
    present = torch.rand(n, k_norm, generator=gen) < (0.5 + 0.5 * torch.rand(n, 1, generator=gen))
    weight = present * (0.6 + 0.3 * torch.rand(n, k_norm, generator=gen))
    mimic = torch.rand(n, k_norm, generator=gen) < 0.04
    radii = torch.where(mimic, radii * 1.6, radii)

    # tumour nuclei: centre region only, on positive patches, with per-patch strength
    k_tum = int(10 * scale * scale) + 3
    lo, span = size * 0.25, size * 0.5
    t_centres = lo + torch.rand(n, k_tum, 2, generator=gen) * span
    t_radii = (1.4 + 0.8 * torch.rand(n, k_tum, generator=gen)) * scale
    t_aspect = 1.1 + 0.6 * torch.rand(n, k_tum, generator=gen)
    strength = (0.25 + 0.75 * torch.rand(n, 1, generator=gen)) * signal
    t_present = torch.rand(n, k_tum, generator=gen) < strength.clamp(max=1.0)
    t_weight = t_present * labels[:, None] * (0.8 + 0.4 * torch.rand(n, k_tum, generator=gen))

    angle = torch.rand(n, k_norm + k_tum, generator=gen) * math.pi
    haem = render_ellipses(torch.cat([centres, t_centres], 1), torch.cat([radii, t_radii], 1),
                         torch.cat([aspect, t_aspect], 1), angle, torch.cat([weight, t_weight], 1), size)
    haem = haem.clamp(max=1.6)

    # stroma texture (eosin): smooth random field from upsampled noise
    eosin = 0.35 + 0.35 * smooth_field(n, size, 6, gen)

    # per-lab stain vectors and optical-density scale
    lab_of_patient = torch.randint(num_labs, (num_patients,), generator=gen)
    lab_h = torch.tensor(HEMATOXYLIN) + 0.12 * torch.randn(num_labs, 3, generator=gen)
    lab_e = torch.tensor(EOSIN) + 0.12 * torch.randn(num_labs, 3, generator=gen)
    lab_od = 0.8 + 0.4 * torch.rand(num_labs, generator=gen)
    lab = lab_of_patient[torch.from_numpy(patient)]
    h_vec = torch.nn.functional.normalize(lab_h.abs()[lab], dim=1)[:, :, None, None]
    e_vec = torch.nn.functional.normalize(lab_e.abs()[lab], dim=1)[:, :, None, None]
    od = lab_od[lab][:, None, None, None] * (haem[:, None] * h_vec * 1.3 + eosin[:, None] * e_vec)
    rgb = torch.exp(-od) + 0.03 * torch.randn(n, 3, size, size, generator=gen)
    images = (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, labels, patient
