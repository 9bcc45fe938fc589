"""Grey-scale chest radiographs; multi-label findings plus "No Finding" (ChestX-ray14-like)."""
from __future__ import annotations

import torch

from .render import grid, pixel_noise, smooth_field, to_uint8

FINDINGS = ["Cardiomegaly", "Effusion", "Nodule", "Pneumothorax", "Consolidation"]
LABEL_NAMES = FINDINGS + ["No Finding"]
PREVALENCE = (0.25, 0.25, 0.25, 0.2, 0.25)
CHUNK = 1024


def generate_chestxray(num_patients: int, images_per_patient: int, size: int, seed: int,
                       signal: float = 1.0, empty=torch.empty):
    """Return uint8 images (N, 1, size, size), labels (N, 6) in LABEL_NAMES order, patient ids (N,).

    Anatomy: soft-tissue body, dark lungs crossed by curved ribs and vessel markings, spine and
    mediastinum, heart, bright diaphragm below the lung domes. Findings (any combination):
    cardiomegaly (wider heart; a patient trait), effusion (fluid filling a lung base with a
    meniscus), nodule/mass (round opacity), pneumothorax (dark apical-lateral rim without markings),
    consolidation (patchy opacity). Their size/contrast is drawn per image times `signal`; exposure
    (gamma, contrast, brightness), body size and position vary per image.
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_patients * images_per_patient
    patient = torch.arange(num_patients).repeat_interleave(images_per_patient)
    propensity = torch.rand(num_patients, len(FINDINGS), generator=gen) * 2.0 * torch.tensor(PREVALENCE)
    findings = torch.rand(n, len(FINDINGS), generator=gen) < propensity[patient]
    p = PREVALENCE[0]  # cardiomegaly is a patient trait, with that prevalence
    findings[:, 0] = (propensity[:, 0] > 2 * p * (1 - p))[patient]
    labels = torch.cat([findings, ~findings.any(1, keepdim=True)], 1).long()
    body = (0.9 + 0.15 * torch.rand(num_patients, generator=gen))[patient]
    heart = (0.95 + 0.1 * torch.rand(num_patients, generator=gen))[patient]

    images = empty(n, 1, size, size, dtype=torch.uint8)
    for s in range(0, n, CHUNK):
        g = torch.Generator().manual_seed(seed * 7919 + s)
        m = min(CHUNK, n - s)
        img = _render(findings[s:s + m].float(), body[s:s + m], heart[s:s + m], size, signal, g)
        images[s:s + m, 0] = to_uint8(img)
    return images, labels, patient


def _render(f, body, heart, size: int, signal: float, g: torch.Generator) -> torch.Tensor:
    m = len(f)
    gx, gy = grid(size)
    shift = 0.05 * torch.randn(m, 2, generator=g)
    x = (gx - shift[:, 0, None, None]) / body[:, None, None]
    y = gy - shift[:, 1, None, None]
    strength = ((0.35 + 0.65 * torch.rand(m, 5, generator=g)) * signal).clamp(max=1.5) * f

    def ellipse(cx, cy, ax, ay, edge=0.08):
        """Soft mask of an ellipse; centre/axes broadcast against (m, 1, 1)."""
        rho = (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2).sqrt_()
        return ((1.0 - rho) / edge).clamp_(0.0, 1.0), rho

    torso, _ = ellipse(0.0, 0.15, 0.9, 1.25, 0.15)
    img = 0.18 + 0.32 * torso
    side = torch.where(torch.rand(m, 1, 1, generator=g) < 0.5, -1.0, 1.0)  # lung with the finding
    lungs, rhos = [], []
    for lx in (-0.4, 0.4):
        mask, rho = ellipse(lx, -0.08, 0.3, 0.62)
        lungs.append(mask)
        rhos.append(rho)
    lung = lungs[0] + lungs[1]
    # ribs: curved bands across the lungs; markings: smooth texture
    ribs = torch.cos((y + 0.35 * x * x) * 26.0).clamp_(min=0.0)
    markings = smooth_field(m, size, 10, g)
    finding_lung = torch.where(side < 0, lungs[0], lungs[1])
    finding_rho = torch.where(side < 0, rhos[0], rhos[1])
    # pneumothorax: outer rim of the upper lung, darker and without markings
    rim = ((finding_rho - (0.8 - 0.2 * strength[:, 3, None, None])) / 0.05).clamp_(0.0, 1.0)
    ptx = rim * finding_lung * (y < 0.05).float() * (strength[:, 3, None, None] > 0).float()
    air = lung * (0.33 - 0.1 * markings * (1.0 - ptx)) + 0.08 * ptx * strength[:, 3, None, None]
    img = img - air + 0.07 * ribs * lung
    # mediastinum, spine and heart
    spine = (1.0 - (x / 0.1).abs()).clamp_(0.0, 1.0) * torso
    img = img + 0.1 * spine
    width = 0.3 * heart[:, None, None] * (1.0 + 0.45 * strength[:, 0, None, None])
    cardiac, _ = ellipse(0.08, 0.3, width, 0.24, 0.15)
    img = img + 0.22 * cardiac * (1.0 - 0.3 * lung)
    # diaphragm: bright below the lung domes
    img = img + 0.2 * ((y - 0.5 - 0.15 * x.abs()) / 0.05).clamp_(0.0, 1.0) * torso
    # effusion: fluid at the base of one lung, meniscus rising laterally
    level = 0.52 - 0.35 * strength[:, 1, None, None] - 0.25 * (x.abs() - 0.4).clamp(min=0.0)
    fluid = ((y - level) / 0.04).clamp_(0.0, 1.0) * finding_lung * (strength[:, 1, None, None] > 0)
    img = img + 0.28 * fluid
    # nodule / mass: round opacity somewhere in either lung
    pos = torch.rand(m, 2, generator=g)
    nx = torch.where(pos[:, 0] < 0.5, -0.4, 0.4)[:, None, None] + 0.3 * (pos[:, 0, None, None] % 0.5 - 0.25)
    ny = -0.3 + 0.6 * pos[:, 1, None, None]
    nodule, _ = ellipse(nx, ny, 0.05 + 0.05 * strength[:, 2, None, None],
                        0.05 + 0.05 * strength[:, 2, None, None], 0.3)
    img = img + 0.22 * nodule * (strength[:, 2, None, None] > 0) * lung
    # consolidation: patchy opacity in the lower half of one lung
    cons, _ = ellipse(0.4 * side, 0.2, 0.2, 0.25, 0.5)
    patchy = 0.5 + 0.5 * smooth_field(m, size, 6, g)
    img = img + 0.25 * strength[:, 4, None, None] * cons * patchy * finding_lung
    # exposure
    gamma = 0.75 + 0.5 * torch.rand(m, 1, 1, generator=g)
    contrast = 0.85 + 0.3 * torch.rand(m, 1, 1, generator=g)
    bright = 0.06 * torch.randn(m, 1, 1, generator=g)
    img = img.clamp_(0.0, 1.0).pow_(gamma).sub_(0.5).mul_(contrast).add_(0.5 + bright)
    return img.add_(pixel_noise((m, size, size), 0.02, g))
