"""What a reader hands to `build_datamodule`: labels, patients, sample ids and a way to get images."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch


@dataclass
class Source:
    labels: torch.Tensor            # (N,) binary / class index, or (N, L) multi-label 0/1
    patients: np.ndarray            # (N,) patient ids (sample ids where patients are unknown)
    sample_ids: np.ndarray          # (N,) file names or "<file>:<row>"
    task: str
    label_names: list[str]          # binary: [the positive label] (class 1); else one per class or label
    channels: int
    images: Optional[torch.Tensor] = None                   # uint8 NCHW in memory, or
    reader: Optional[Callable[[int], torch.Tensor]] = None  # index -> uint8 CHW, read lazily
    test_mask: Optional[np.ndarray] = None                  # official test samples, if any


def positive_label(task: str, label_names: list[str]) -> str:
    """The positive class (label 1) of a binary task, the one its AUC scores; "" for other tasks."""
    return str(label_names[0]) if task == "binary" else ""
