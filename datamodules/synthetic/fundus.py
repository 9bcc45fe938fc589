"""Colour fundus photographs; label = referable diabetic retinopathy (Kaggle DR grade >= 2)."""
from __future__ import annotations

import math

import torch

from .render import pixel_noise, render_ellipses, smooth_field, to_uint8

LABEL_NAMES = ["referable_dr"]
CHUNK = 1024
RETINA = (0.80, 0.38, 0.16)  # mean fundus colour (RGB reflectance)


def generate_fundus(num_patients: int, images_per_patient: int, size: int, seed: int,
                    signal: float = 1.0, num_cameras: int = 4, empty=torch.empty):
    """Return uint8 images (N, 3, size, size), labels (N,), patient ids (N,).

    Each image: a circular field of view on black, orange retina with vignetting and uneven
    illumination, optic disc (nasal side, by eye), darker macula, a branching vessel tree from the
    disc. Non-referable eyes may show a few microaneurysms (grade 1); referable eyes show
    microaneurysms, haemorrhages and hard exudates, their numbers drawn from a per-eye severity
    times `signal`. Images alternate right/left eye per patient; the two eyes of a patient usually
    agree. Colour gains, gamma and illumination vary per camera (one camera per patient).
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_patients * images_per_patient
    patient = torch.arange(num_patients).repeat_interleave(images_per_patient)
    patient_ref = torch.rand(num_patients, generator=gen) < 0.4
    eye_ref = torch.rand(n, generator=gen) < torch.where(patient_ref[patient], 0.85, 0.08)
    labels = eye_ref.long()
    right_eye = (torch.arange(n) % 2 == 0).float()

    camera = torch.randint(num_cameras, (num_patients,), generator=gen)[patient]
    cam_colour = (torch.tensor(RETINA) * (0.8 + 0.4 * torch.rand(num_cameras, 3, generator=gen)))[camera]
    cam_gamma = (0.8 + 0.4 * torch.rand(num_cameras, generator=gen))[camera]

    images = empty(n, 3, size, size, dtype=torch.uint8)
    for s in range(0, n, CHUNK):
        g = torch.Generator().manual_seed(seed * 7919 + s)
        m = min(CHUNK, n - s)
        rgb = _render(labels[s:s + m], right_eye[s:s + m], cam_colour[s:s + m], size, signal, g)
        rgb = rgb.clamp_(min=0.0).pow_(cam_gamma[s:s + m, None, None, None])
        images[s:s + m] = to_uint8(rgb)
    return images, labels, patient


def _render(labels, right_eye, colour, size: int, signal: float, g: torch.Generator) -> torch.Tensor:
    m = len(labels)
    coord = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]
    cx, cy = (0.04 * torch.randn(m, 2, generator=g)).unbind(1)
    radius = 0.9 + 0.06 * torch.rand(m, generator=g)
    # separable terms: (m, 1, size) along x plus (m, size, 1) along y
    dx2 = ((coord - cx[:, None]) / radius[:, None]).square()[:, None, :]
    dy2 = ((coord - cy[:, None]) / radius[:, None]).square()[:, :, None]
    dist2 = dx2 + dy2
    fov = dist2.sqrt().neg_().add_(1.0).mul_(size * 0.5).clamp_(0.0, 1.0)  # anti-aliased disc edge
    # illumination: vignetting plus a random linear gradient, times a smooth field
    tilt = 0.25 * torch.randn(m, 2, generator=g)
    light = (1.0 - 0.45 * dx2 + tilt[:, 0, None, None] * coord) + (-0.45 * dy2 + tilt[:, 1, None, None] * coord[:, None])
    light = light.mul_(smooth_field(m, size, 4, g).mul_(0.15).add_(0.9))

    side = 2.0 * right_eye - 1.0  # disc on the right of the image for right eyes
    to_px = lambda v: (v + 1.0) * 0.5 * size  # noqa: E731  [-1, 1] -> pixels
    disc = torch.stack([cx + side * 0.45 + 0.05 * torch.randn(m, generator=g),
                        cy + 0.05 * torch.randn(m, generator=g)], 1)
    macula = torch.stack([cx - side * 0.15, cy + 0.03 * torch.randn(m, generator=g)], 1)
    unit = size / 2.0

    # vessels: 4 arcades from the disc, each a chain of elongated dots, plus 2 branches per arcade
    steps, n_arc = 14, 4
    start = torch.tensor([-1.1, 1.1, -0.6, 0.6])  # angles relative to "towards the macula"
    turns = torch.tensor([0.085, -0.085, 0.02, -0.02])  # temporal arcades bend around the macula
    heading = math.pi * (side > 0).float()  # towards the macula (pointing away from the disc side)
    phi0 = heading[:, None] + start + torch.tensor([0.0, 0.0, math.pi, math.pi])
    walk = turns[None, :, None] + 0.12 * torch.randn(m, n_arc, steps, generator=g)
    phi = phi0[:, :, None] + walk.cumsum(2)
    step_len = 0.065
    pts = disc[:, None, None, :] + step_len * torch.stack([phi.cos(), phi.sin()], 3).cumsum(2)
    width = 0.03 * torch.linspace(1.0, 0.45, steps).expand(m, n_arc, steps)
    # branches leave each arcade at steps 4 and 8
    b_start = pts[:, :, [4, 8], :].reshape(m, 2 * n_arc, 1, 2)
    b_phi = phi[:, :, [4, 8]].reshape(m, 2 * n_arc, 1) + 0.7 * torch.sign(torch.randn(m, 2 * n_arc, 1, generator=g))
    b_phi = b_phi + (0.15 * torch.randn(m, 2 * n_arc, 7, generator=g)).cumsum(2)
    b_pts = b_start + step_len * torch.stack([b_phi.cos(), b_phi.sin()], 3).cumsum(2)
    b_width = 0.016 * torch.linspace(1.0, 0.5, 7).expand(m, 2 * n_arc, 7)
    v_pts = torch.cat([pts.reshape(m, -1, 2), b_pts.reshape(m, -1, 2)], 1)
    v_phi = torch.cat([phi.reshape(m, -1), b_phi.reshape(m, -1)], 1)
    v_w = torch.cat([width.reshape(m, -1), b_width.reshape(m, -1)], 1) * unit
    v_w = v_w.clamp(min=0.35)
    half_len = step_len * unit * 0.75
    vessels = render_ellipses(to_px(v_pts), (half_len * v_w).sqrt(), (half_len / v_w).sqrt(), v_phi,
                              torch.ones_like(v_w), size).clamp_(max=1.0)

    # lesions: counts from severity; positions inside the FOV, exudates clustered near the macula
    severity = torch.where(labels.bool(), (0.15 + 0.85 * torch.rand(m, generator=g)) * signal,
                           torch.zeros(m)).clamp(max=1.0)
    mild = 0.2 * torch.rand(m, generator=g)  # grade-1 microaneurysms in non-referable eyes
    k_ma, k_hm, k_ex = 10, 6, 8
    ma_on = torch.rand(m, k_ma, generator=g) < (mild + severity * 0.6)[:, None]
    hm_on = torch.rand(m, k_hm, generator=g) < (severity * 0.5)[:, None]
    ex_on = torch.rand(m, k_ex, generator=g) < (severity * 0.5)[:, None]
    ang = 2 * math.pi * torch.rand(m, k_ma + k_hm, generator=g)
    rad = 0.75 * torch.rand(m, k_ma + k_hm, generator=g).sqrt()
    red_pos = torch.stack([cx[:, None] + rad * ang.cos(), cy[:, None] + rad * ang.sin()], 2)
    red_r = torch.cat([torch.full((m, k_ma), 0.018), 0.03 + 0.04 * torch.rand(m, k_hm, generator=g)], 1) * unit
    red_r = red_r.clamp(min=0.55)
    red = render_ellipses(to_px(red_pos), red_r, 1.0 + 0.3 * torch.rand(m, k_ma + k_hm, generator=g),
                          math.pi * torch.rand(m, k_ma + k_hm, generator=g),
                          torch.cat([ma_on, hm_on], 1).float(), size).clamp_(max=1.0)
    ex_pos = macula[:, None, :] + 0.25 * torch.randn(m, k_ex, 2, generator=g)
    ex_r = ((0.012 + 0.018 * torch.rand(m, k_ex, generator=g)) * unit).clamp(min=0.5)
    exudate = render_ellipses(to_px(ex_pos), ex_r, torch.ones(m, k_ex), torch.zeros(m, k_ex),
                              ex_on.float(), size).clamp_(max=1.0)

    def blob(centre, r):
        """Separable Gaussian spot (m, size, size)."""
        gx = (-(coord - centre[:, 0, None]).square() / (2 * r * r)).exp()
        gy = (-(coord - centre[:, 1, None]).square() / (2 * r * r)).exp()
        return gy[:, :, None] * gx[:, None, :]

    disc_img = blob(disc, 0.09 + 0.015 * torch.rand(m, 1, generator=g))
    lit = light.mul_(blob(macula, torch.full((m, 1), 0.12)).mul_(-0.35).add_(1.0))
    dark = vessels.mul_(0.45).add_(red.mul_(0.6))
    noise = pixel_noise((m, size, size), 0.015, g)
    # colour mixing of per-pixel features in one batched product: (m, 3, 6) @ (m, 6, pixels)
    features = torch.stack([lit, disc_img, lit * dark, disc_img * dark, exudate, noise], 1).view(m, 6, -1)
    disc_colour = torch.tensor([0.25, 0.45, 0.30]).expand(m, 3)
    vessel_absorb = torch.tensor([0.35, 0.8, 0.8])
    mixing = torch.stack([colour, disc_colour, -colour * vessel_absorb, -disc_colour * vessel_absorb,
                          torch.tensor([0.45, 0.4, 0.05]).expand(m, 3), torch.ones(m, 3)], 2)
    rgb = torch.bmm(mixing, features).view(m, 3, size, size)
    return rgb.mul_(fov[:, None])
