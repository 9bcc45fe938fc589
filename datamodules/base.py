"""LightningDataModules split by the development-set manifest: in-memory arrays or lazy readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .splits import dev_set_indices


class ImageArrayDataset(Dataset):
    """(image, label) pairs from uint8 NCHW images; images leave as float32 in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray):
        self.images, self.labels, self.indices = images, labels, torch.as_tensor(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        return self.images[j].float().div_(255.0), self.labels[j]


class ReaderDataset(Dataset):
    """(image, label) pairs read per item by `reader(j) -> uint8 CHW tensor` (lazy, worker-safe)."""

    def __init__(self, reader, labels: torch.Tensor, indices: np.ndarray):
        self.reader, self.labels, self.indices = reader, labels, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        return self.reader(j).float().div_(255.0), self.labels[j]


class DevSetDataModule(pl.LightningDataModule):
    """Train/val loaders of one development set and the shared test loader.

    Images come from `images` (uint8 NCHW tensor, in memory) or `reader` (index -> uint8 CHW).
    Exposes `task`, `num_outputs`, `label_names`, `channels` and the split `manifest`
    (sample_id, patient_id, partition, stage, in_d2_half, in_d1_tenth; `save_manifest(path)`).
    Every split this development set needs is checked to be non-empty at construction.
    """

    def __init__(self, labels: torch.Tensor, manifest: pd.DataFrame, *, task: str, label_names: list[str],
                 channels: int, dev_set: str, images: torch.Tensor | None = None, reader=None,
                 batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        if (images is None) == (reader is None):
            raise ValueError("give exactly one of images or reader")
        self.images, self.reader, self.labels, self.manifest = images, reader, labels, manifest
        self.task, self.label_names, self.dev_set, self.channels = task, list(label_names), dev_set, channels
        self.num_outputs = len(self.label_names) if task != "binary" else 1
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.indices = {stage: dev_set_indices(manifest, dev_set, stage) for stage in ("train", "val", "test")}

    def save_manifest(self, path: str | Path) -> Path:
        """Write the split manifest as CSV (one row per sample) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.to_csv(path, index=False)
        return path

    def dataset(self, stage: str) -> Dataset:
        if self.images is not None:
            return ImageArrayDataset(self.images, self.labels, self.indices[stage])
        return ReaderDataset(self.reader, self.labels, self.indices[stage])

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        # The split follows the data seed; the training order follows torch's global seed (the
        # model's training seed, derived from the model's whole identity).
        return DataLoader(self.dataset(stage), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
