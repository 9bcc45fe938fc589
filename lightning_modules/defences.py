"""Input defences: transformations of [0, 1] pixels put in front of a trained model (and so in front
of its normalisation), with their parameters, checks and defaults.

`jpeg` and `bit_depth` are not differentiable (a real JPEG round trip, rounding); they pass the
gradient straight through (BPDA: forward = the defence, backward = identity), so attacks crafted on a
defended surrogate still follow a meaningful gradient. `median`, `gaussian` and `resize` are
differentiable almost everywhere and back-propagate through themselves (`resize`: through the
random draw made in that forward pass).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg

from .settings import Rule, named_settings


def straight_through(images: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """BPDA: the value of `transformed`, the gradient of the identity."""
    return images + (transformed - images).detach()


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG encode/decode (libjpeg through torchvision) of each 8-bit image; a channel count
    other than 1 or 3 is compressed channel by channel as grey images."""
    pixels = torch.round(images.detach().clamp(0, 1) * 255).to(torch.uint8).cpu()
    if pixels.shape[1] not in (1, 3):
        return torch.cat([jpeg(images[:, c:c + 1], quality) for c in range(images.shape[1])], dim=1)
    decoded = decode_jpeg(encode_jpeg(list(pixels), quality=quality))
    out = torch.stack(decoded).to(images.device, images.dtype) / 255.0
    return straight_through(images, out)


def bit_depth(images: torch.Tensor, bits: int) -> torch.Tensor:
    """Pixels rounded to `bits` bits per channel (2**bits levels)."""
    levels = 2 ** bits - 1
    return straight_through(images, torch.round(images * levels) / levels)


def median(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Median of each `kernel` x `kernel` neighbourhood (reflected borders), channel by channel."""
    pad = kernel // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    patches = padded.unfold(2, kernel, 1).unfold(3, kernel, 1)
    return patches.flatten(-2).median(dim=-1).values


def gaussian(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation `sigma` pixels (kernel of +-3 sigma, reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    weights = torch.exp(-x ** 2 / (2 * sigma ** 2))
    weights = weights / weights.sum()
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class RandomResizePad(nn.Module):
    """Each image shrunk to a random size in [min_scale, 1] of its own (bilinear) and zero-padded
    back at a random offset. The draws of an image come from `seed` and the image's content: a new
    image (an attack's next step, an adversarial version) meets a new transform, while the same
    image meets the same one however often, in whatever order and in whichever process it is
    scored, so results do not depend on how the work is scheduled."""

    def __init__(self, min_scale: float, seed: int):
        super().__init__()
        self.min_scale, self.seed = min_scale, int(seed)

    def generator(self, image: torch.Tensor) -> torch.Generator:
        content = hashlib.sha256(image.detach().float().cpu().contiguous().numpy().tobytes()).digest()
        return torch.Generator().manual_seed(int.from_bytes(content[:7], "little") ^ self.seed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        out = []
        for image in images:
            generator = self.generator(image)
            scale = self.min_scale + (1 - self.min_scale) * float(torch.rand((), generator=generator))
            h, w = max(1, round(height * scale)), max(1, round(width * scale))
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            small = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)
            out.append(F.pad(small, (left, width - w - left, top, height - h - top)))
        return torch.cat(out)


class Transform(nn.Module):
    """A pixel transformation as a module (`fn(images, **params)`)."""

    def __init__(self, fn: Callable[..., torch.Tensor], **params):
        super().__init__()
        self.fn, self.params = fn, params

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images, **self.params)


@dataclass(frozen=True)
class DefenceSpec:
    """A registered defence: its builder, parameters with defaults and their checks."""
    make: Callable[..., nn.Module]
    defaults: dict[str, Any]
    checks: dict[str, Rule]
    doc: str


DEFENCES: dict[str, DefenceSpec] = {
    "jpeg": DefenceSpec(lambda quality: Transform(jpeg, quality=quality), {"quality": 75},
                        {"quality": (lambda v: 1 <= v <= 100, "in 1..100")}, "JPEG round trip (BPDA)"),
    "bit_depth": DefenceSpec(lambda bits: Transform(bit_depth, bits=bits), {"bits": 4},
                             {"bits": (lambda v: 1 <= v <= 8, "in 1..8")}, "bit-depth reduction (BPDA)"),
    "median": DefenceSpec(lambda kernel: Transform(median, kernel=kernel), {"kernel": 3},
                          {"kernel": (lambda v: v >= 3 and v % 2 == 1, "odd and >= 3")}, "median filter"),
    "gaussian": DefenceSpec(lambda sigma: Transform(gaussian, sigma=sigma), {"sigma": 1.0},
                            {"sigma": (lambda v: v > 0, "> 0")}, "Gaussian blur"),
    "resize": DefenceSpec(RandomResizePad, {"min_scale": 0.8, "seed": 0},
                          {"min_scale": (lambda v: 0 < v < 1, "in (0, 1)"), "seed": (lambda v: v >= 0, ">= 0")},
                          "random resize and pad, seeded"),
}


def defence_params(cfg) -> tuple[str, dict[str, Any]]:
    """Validate a defence config (`name` plus parameters) -> (name, complete parameters), or a
    one-line ValueError naming the parameter and value."""
    name = dict(cfg).get("name")
    return named_settings("defence", cfg, {n: spec.defaults for n, spec in DEFENCES.items()},
                          DEFENCES[name].checks if name in DEFENCES else {})


class Defended(nn.Module):
    """A model behind an input defence: `model(defence(images))`, same contract as `model`."""

    def __init__(self, model: nn.Module, defence: nn.Module, name: str):
        super().__init__()
        self.model, self.defence, self.name = model, defence, name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.defence(images))


def defended(model: nn.Module, cfg) -> Defended:
    """`model` behind the defence that `cfg` (`name` plus parameters) describes."""
    name, params = defence_params(cfg)
    return Defended(model, DEFENCES[name].make(**params), name)
