"""Vectorised drawing primitives shared by the synthetic domains (float32 throughout)."""
from __future__ import annotations

import math

import torch

_CHUNK_PIXELS = 1 << 22  # stamped pixels evaluated per step (bounds the temporary memory)


def render_ellipses(centres, radii, aspect, angle, weight, size: int, sharpness: float = 3.0) -> torch.Tensor:
    """Sum of soft-edged ellipses per image, shape (N, size, size).

    centres (N, K, 2) in pixels (x, y); radii, aspect, angle, weight (N, K). Semi-axes are
    radius*aspect and radius/aspect; the edge ramps linearly over 1/sharpness of the radius.
    Ellipses of zero weight are skipped; the rest are stamped into windows just big enough for
    them (ellipses are grouped by window size), so the cost follows the drawn area.
    """
    n, k = radii.shape
    keep = weight.reshape(-1) != 0
    if not bool(keep.any()):
        return torch.zeros(n, size, size)
    image = torch.arange(n).repeat_interleave(k)[keep]
    cx, cy = centres.reshape(-1, 2)[keep].float().unbind(1)
    r, a, t, w = (v.reshape(-1)[keep].float() for v in (radii, aspect, angle, weight))
    half = (r * a.clamp(min=1.0) * (1.0 + 1.0 / sharpness)).ceil().long().clamp(min=1)
    # stamp into a canvas padded by the largest window, so no pixel needs a bounds test
    x0 = cx.floor().long().clamp(-1, size)
    y0 = cy.floor().long().clamp(-1, size)
    pad = int(half.max()) + 1
    side = size + 2 * pad
    out = torch.zeros(n * side * side)
    base = (image * side + y0 + pad) * side + x0 + pad
    fx, fy = x0 + 0.5 - cx, y0 + 0.5 - cy
    inv_major, inv_minor = 1.0 / (r * a), a / r
    ux, uy = torch.cos(t) * inv_major, torch.sin(t) * inv_major
    vx, vy = -torch.sin(t) * inv_minor, torch.cos(t) * inv_minor
    for h in half.unique().tolist():
        sel = torch.nonzero(half == h).squeeze(1)
        offsets = torch.arange(-h, h + 1)
        oy = offsets.repeat_interleave(2 * h + 1)
        ox = offsets.repeat(2 * h + 1)
        step = max(1, _CHUNK_PIXELS // len(ox))
        ofs = oy * side + ox
        oxf, oyf = ox.float(), oy.float()
        for s in range(0, len(sel), step):
            j = sel[s:s + step]
            u = torch.addcmul((fx[j] * ux[j] + fy[j] * uy[j])[:, None], ux[j, None], oxf).addcmul_(uy[j, None], oyf)
            v = torch.addcmul((fx[j] * vx[j] + fy[j] * vy[j])[:, None], vx[j, None], oxf).addcmul_(vy[j, None], oyf)
            value = u.mul_(u).addcmul_(v, v).sqrt_().mul_(-sharpness).add_(sharpness + 0.5)
            value = value.clamp_(0.0, 1.0).mul_(w[j, None])
            out.index_add_(0, (base[j, None] + ofs).view(-1), value.view(-1))
    return out.view(n, side, side)[:, pad:pad + size, pad:pad + size].contiguous()


def smooth_field(n: int, size: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random field in [0, 1] (bilinear upsampling of a coarse uniform grid), (N, size, size)."""
    coarse = torch.rand(n, 1, cells, cells, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return field[:, 0]


def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1]: (x, y), each (size, size)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    return c[None, :].expand(size, size), c[:, None].expand(size, size)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> rounded uint8 (in place on `images`)."""
    return images.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


def pixel_noise(shape, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Cheap uniform pixel noise with standard deviation `scale`."""
    return (torch.rand(shape, generator=generator) - 0.5).mul_(scale * math.sqrt(12.0))
