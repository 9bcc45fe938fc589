"""What a reader's browser receives: every image, clean or attacked, quantised to 8-bit pixels the
same way and encoded as an uncompressed PNG, so both sides of a trial have the same type and the
same byte size (compressed files would differ: noise compresses worse)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def quantise(images: torch.Tensor) -> np.ndarray:
    """Float [0, 1] NCHW images as uint8 NHWC (rounded to the nearest of 256 levels; an attacked
    image's perturbation below half a level vanishes, as it would on any 8-bit display)."""
    pixels = torch.round(images.detach().cpu().float().clamp(0, 1) * 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def png_bytes(pixels: np.ndarray) -> bytes:
    """One HWC uint8 image (1 or 3 channels) as a PNG without compression or metadata: its size
    depends on its height, width and channels only."""
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"reader study: cannot show an image of shape {pixels.shape} ({pixels.dtype})")
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=0, optimize=False)
    return out.getvalue()
