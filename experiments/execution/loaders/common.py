"""What the format loaders share: what a loader gives, one-line errors, numpy-scoring cores, a model file."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from datamodules.fingerprint import sha256_file

from ...design.external import ExternalError


class Loaded(NamedTuple):
    """A loaded external model's core and what the loader knows of it."""
    core: nn.Module
    differentiable: bool
    content: str = ""  # the sha256 of its file(s); '' for an endpoint
    expects: str = ""  # the input shape its file declares; '' where unknown
    endpoint: object = None  # its `Endpoint` (http), else None


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type when it has none), at most 200 characters."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]



def model_file(name: str, settings: dict) -> tuple[Path, str]:
    """An entry's model file (`path`) and its sha256, or ExternalError naming the key when it is not a file."""
    path = Path(str(settings["path"])).expanduser()
    if not path.is_file():
        raise ExternalError(f"models.{name}.external.path: {path}: file not found")
    return path, sha256_file(path)


class NumpyCore(nn.Module):
    """A model that scores numpy arrays, as a module: no gradients, results on the input's device."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray]):
        super().__init__()
        self.score = score

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            array = images.detach().float().cpu().numpy()
            answer = self.score(array)
            try:
                scores = np.asarray(answer, dtype=np.float32)
            except (TypeError, ValueError):
                raise ExternalError(f"the model answers a {type(answer).__name__}, not an array of scores") from None
            return torch.as_tensor(scores).to(images.device)
