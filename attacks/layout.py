"""Image-layout adapters for attacks that assume RGB or square images.

torchattacks' TI-FGSM smooths gradients with a depthwise convolution fixed at 3 channels, and the
input diversity of DI/TI-FGSM resizes to a square of the image width. Rather than forking those
attacks, the images are presented in the layout they assume, with a model wrapper that maps the
presented images back to the real layout, and the result is mapped back the same way.

- 1 channel -> 3: the attack sees the channel followed by two copies; the wrapper feeds only the
  first channel to the model. The copies get zero gradient and never move; every operation of these
  attacks is per channel (the 3-channel kernel is depthwise), and the gradient normalisations
  (mean |g| over the image) scale every step by the same factor 3, which no sign step sees, so the
  first channel follows exactly the 1-channel attack.
- H x W -> S x S (S = max(H, W)): zero padding, centred; the wrapper resizes whatever square it
  gets back to S x S (only when input diversity produced another size) and crops the image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FirstChannel(nn.Module):
    """Feeds the model only the first channel of 3-channel presentations of 1-channel images."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images[:, :1])

    @staticmethod
    def present(images: torch.Tensor) -> torch.Tensor:
        return images.repeat(1, 3, 1, 1)

    @staticmethod
    def restore(images: torch.Tensor) -> torch.Tensor:
        return images[:, :1]


class CenteredSquare(nn.Module):
    """Feeds the model the H x W image cropped out of a zero-padded S x S presentation."""

    def __init__(self, model: nn.Module, height: int, width: int):
        super().__init__()
        self.model, self.height, self.width = model, height, width
        self.side = max(height, width)
        self.top, self.left = (self.side - height) // 2, (self.side - width) // 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.side, self.side):
            images = F.interpolate(images, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return self.model(self.restore(images))

    def present(self, images: torch.Tensor) -> torch.Tensor:
        bottom, right = self.side - self.height - self.top, self.side - self.width - self.left
        return F.pad(images, [self.left, right, self.top, bottom])

    def restore(self, images: torch.Tensor) -> torch.Tensor:
        return images[..., self.top:self.top + self.height, self.left:self.left + self.width]
