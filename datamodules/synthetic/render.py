"""Vectorised drawing primitives shared by the synthetic domains."""
from __future__ import annotations

import math

import torch


def render_ellipses(centres, radii, aspect, angle, weight, size: int, sharpness: float = 6.0,
                    chunk: int = 256) -> torch.Tensor:
    """Sum of soft-edged ellipses per image.

    centres (N, K, 2) in pixels (x, y); radii, aspect, angle, weight (N, K). Semi-axes are
    radius*aspect and radius/aspect. Each ellipse is evaluated only in a window around its centre
    and scatter-added, so the cost grows with the ellipse area, not the image area.
    Returns (N, size, size).
    """
    n, k = radii.shape
    half = int(math.ceil(float((radii * aspect).max()) + 2.0 / sharpness)) + 1 if k else 0
    offsets = torch.arange(-half, half + 1)
    oy, ox = torch.meshgrid(offsets, offsets, indexing="ij")
    oy, ox = oy.reshape(-1), ox.reshape(-1)
    out = torch.zeros(n * size * size)
    for s in range(0, n, chunk):
        c = centres[s:s + chunk]
        m = len(c)
        px = c[..., 0].floor().long()[..., None] + ox  # (m, K, W)
        py = c[..., 1].floor().long()[..., None] + oy
        dx = px + 0.5 - c[..., 0:1]
        dy = py + 0.5 - c[..., 1:2]
        r, a, t, w = (v[s:s + chunk, :, None] for v in (radii, aspect, angle, weight))
        cos, sin = torch.cos(t), torch.sin(t)
        u = (dx * cos + dy * sin) / (r * a)
        v = (-dx * sin + dy * cos) / (r / a)
        value = torch.sigmoid((1.0 - torch.sqrt(u * u + v * v)) * sharpness) * w
        inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        image = (torch.arange(s, s + m)[:, None, None] * size + py) * size + px
        out.index_add_(0, image[inside], value[inside])
    return out.view(n, size, size)


def smooth_field(n: int, size: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random field in [0, 1] (bicubic upsampling of a coarse uniform grid), (N, size, size)."""
    coarse = torch.rand(n, 1, cells, cells, generator=generator)
    field = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    return field[:, 0].clamp(0, 1)
