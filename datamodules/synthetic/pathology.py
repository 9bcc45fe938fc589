"""H&E-like pathology patches; label = metastatic (tumour) nuclei in the patch centre (PCam-like)."""
from __future__ import annotations

import math

import torch

from .render import pixel_noise, render_ellipses, smooth_field, to_uint8

# Optical-density stain vectors (haematoxylin, eosin) of a typical H&E slide; "labs" perturb them.
HEMATOXYLIN = (0.65, 0.70, 0.29)
EOSIN = (0.07, 0.99, 0.11)
LABEL_NAMES = ["tumour"]
CHUNK = 1024


def generate_pathology(num_patients: int, images_per_patient: int, size: int, seed: int,
                       signal: float = 1.0, num_labs: int = 4, empty=torch.empty):
    """Return uint8 images (N, 3, size, size), labels (N,), patient ids (N,).

    The scene is defined in patch-relative units (counts fixed, sizes proportional to `size`), so
    the difficulty barely depends on the resolution. Every patch has small round normal nuclei over
    eosin stroma and, in its central half, a few "mimic" nuclei (large and dark, as in inflammation);
    a tumour patch adds larger, darker, crowded, irregular nuclei in the centre, their count drawn
    from a per-patch strength times `signal`, so weak tumours overlap with normal patches.
    Stain vectors and optical density vary per lab; each patient's slides come from one lab.
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_patients * images_per_patient
    patient = torch.arange(num_patients).repeat_interleave(images_per_patient)
    labels = (torch.rand(n, generator=gen) < 0.5).long()

    lab_of_patient = torch.randint(num_labs, (num_patients,), generator=gen)
    lab_h = (torch.tensor(HEMATOXYLIN) + 0.12 * torch.randn(num_labs, 3, generator=gen)).abs()
    lab_e = (torch.tensor(EOSIN) + 0.12 * torch.randn(num_labs, 3, generator=gen)).abs()
    lab_od = 0.75 + 0.5 * torch.rand(num_labs, generator=gen)
    lab = lab_of_patient[patient]
    h_vec = torch.nn.functional.normalize(lab_h, dim=1)[lab]
    e_vec = torch.nn.functional.normalize(lab_e, dim=1)[lab]
    od_scale = lab_od[lab] * (0.9 + 0.2 * torch.rand(n, generator=gen))

    images = empty(n, 3, size, size, dtype=torch.uint8)
    for s in range(0, n, CHUNK):
        chunk_gen = torch.Generator().manual_seed(seed * 7919 + s)
        m = min(CHUNK, n - s)
        haem = _nuclei(labels[s:s + m], size, signal, chunk_gen)
        eosin = smooth_field(m, size, 5, chunk_gen).mul_(0.45).add_(0.25)
        stains = torch.stack([h_vec[s:s + m] * 1.4, e_vec[s:s + m]], 2) * od_scale[s:s + m, None, None]
        od = torch.bmm(stains, torch.stack([haem, eosin], 1).view(m, 2, -1))  # (m, 3, pixels)
        rgb = od.neg_().exp_().view(m, 3, size, size).add_(pixel_noise((m, 1, size, size), 0.03, chunk_gen))
        images[s:s + m] = to_uint8(rgb)
    return images, labels, patient


def _nuclei(labels: torch.Tensor, size: int, signal: float, gen: torch.Generator) -> torch.Tensor:
    """Haematoxylin density (M, size, size): normal nuclei everywhere, mimics and tumour in the centre."""
    m = len(labels)
    k_norm, k_centre = 40, 14
    # normal nuclei: small, round, anywhere
    c_norm = torch.rand(m, k_norm, 2, generator=gen) * size
    r_norm = (0.025 + 0.012 * torch.rand(m, k_norm, generator=gen)) * size
    a_norm = 1.0 + 0.25 * torch.rand(m, k_norm, generator=gen)
    density = 0.4 + 0.6 * torch.rand(m, 1, generator=gen)
    w_norm = (torch.rand(m, k_norm, generator=gen) < density) * (0.6 + 0.3 * torch.rand(m, k_norm, generator=gen))
    # centre nuclei: tumour (positives) or mimics (any patch), same appearance
    c_ctr = size * 0.25 + torch.rand(m, k_centre, 2, generator=gen) * size * 0.5
    r_ctr = (0.04 + 0.025 * torch.rand(m, k_centre, generator=gen)) * size
    a_ctr = 1.1 + 0.6 * torch.rand(m, k_centre, generator=gen)
    strength = (0.05 + 0.95 * torch.rand(m, 1, generator=gen)) * signal * 0.7
    mimic_rate = 0.18 * torch.rand(m, 1, generator=gen)
    rate = mimic_rate + labels[:, None] * strength
    w_ctr = (torch.rand(m, k_centre, generator=gen) < rate) * (0.8 + 0.5 * torch.rand(m, k_centre, generator=gen))
    angle = torch.rand(m, k_norm + k_centre, generator=gen) * math.pi
    haem = render_ellipses(torch.cat([c_norm, c_ctr], 1), torch.cat([r_norm, r_ctr], 1),
                           torch.cat([a_norm, a_ctr], 1), angle, torch.cat([w_norm, w_ctr], 1), size)
    return haem.clamp_(max=1.6)
