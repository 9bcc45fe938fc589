"""The model contract: pixel-space [0, 1] NCHW input, any channel count, logits per task layout."""
from __future__ import annotations

import math

import torch
from torch import nn

from .architectures import get_architecture
from .pretrained import load_state_dict_file
from .tasks import num_logits

INITS = ("imagenet", "random", "checkpoint:<path>")


class PixelSpaceClassifier(nn.Module):
    """Maps [0, 1] NCHW images with `in_chans` channels to logits; normalisation happens inside.

    Grey input (1 channel) is replicated to RGB; any count but 1 or 3 passes through a
    learnable 1x1 convolution to RGB that starts as the channel mean. Inputs smaller than `min_size`
    are upsampled (bilinear, aspect kept) so that every architecture takes tiny images.
    """

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 in_chans: int, min_size: int = 1):
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans={in_chans}: need at least one channel")
        self.backbone = backbone
        self.in_chans = in_chans
        self.min_size = min_size
        self.to_rgb = None
        if in_chans not in (1, 3):
            self.to_rgb = nn.Conv2d(in_chans, 3, kernel_size=1, bias=False)
            nn.init.constant_(self.to_rgb.weight, 1.0 / in_chans)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(f"model expects N x {self.in_chans} x H x W input, "
                             f"got shape {tuple(images.shape)}")
        if self.in_chans == 1:
            images = images.expand(-1, 3, -1, -1)
        elif self.to_rgb is not None:
            images = self.to_rgb(images)
        height, width = images.shape[-2:]
        if min(height, width) < self.min_size:
            scale = self.min_size / min(height, width)
            size = (math.ceil(height * scale), math.ceil(width * scale))
            images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return self.backbone((images - self.mean) / self.std)


def he_init(module: nn.Module) -> None:
    """Random (He/Kaiming-normal) initialisation of every convolution and linear layer, as in the paper."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def build_classifier(arch: str, init: str, task: str, num_outputs: int, in_chans: int) -> nn.Module:
    """A classifier following the model contract; `init` is `imagenet`, `random` or `checkpoint:<path>`."""
    spec = get_architecture(arch)
    logits = num_logits(task, num_outputs)
    if init not in ("imagenet", "random") and not init.startswith("checkpoint:"):
        raise ValueError(f"unknown init {init!r}; valid: {', '.join(INITS)}")
    backbone = spec.build(logits, init == "imagenet")
    if init == "random":
        he_init(backbone)
    model = PixelSpaceClassifier(backbone, spec.mean, spec.std, in_chans, spec.min_size)
    if init.startswith("checkpoint:"):
        model.load_state_dict(load_state_dict_file(init.removeprefix("checkpoint:")))
    return model
