"""Architecture registry: name -> builder of a backbone that maps normalised RGB to logits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import timm
from torch import nn

from .pretrained import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0_imagenet


@dataclass(frozen=True)
class Architecture:
    """A registered backbone: `build(num_outputs, imagenet)` and the input statistics it expects."""

    build: Callable[[int, bool], nn.Module]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    min_size: int = 1


def _tiny_cnn(num_outputs: int, imagenet: bool) -> nn.Module:
    if imagenet:
        raise ValueError("tiny_cnn has no ImageNet weights; use init=random")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_outputs),
    )


def _efficientnet_lite0(num_outputs: int, imagenet: bool) -> nn.Module:
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if imagenet:
        efficientnet_lite0_imagenet(model)
    model.reset_classifier(num_outputs)
    return model


ARCHITECTURES: dict[str, Architecture] = {
    "tiny_cnn": Architecture(_tiny_cnn, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    "efficientnet_lite0": Architecture(_efficientnet_lite0),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHITECTURES))}") from None
