"""A LightningDataModule over in-memory uint8 images, split by the development-set manifest."""
from __future__ import annotations

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


class ImageArrayDataModule(pl.LightningDataModule):
    """Train/val loaders of one development set and the shared test loader.

    Exposes `task`, `num_outputs`, `label_names`, `channels` and the split `manifest`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, manifest: pd.DataFrame, *,
                 task: str, label_names: list[str], dev_set: str, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.images, self.labels, self.manifest = images, labels, manifest
        self.task, self.label_names, self.dev_set = task, list(label_names), dev_set
        self.num_outputs = len(self.label_names) if task != "binary" else 1
        self.channels = images.shape[1]
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def dataset(self, stage: str) -> ImageArrayDataset:
        return ImageArrayDataset(self.images, self.labels, dev_set_indices(self.manifest, self.dev_set, stage))

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.dataset(stage), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=generator,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
