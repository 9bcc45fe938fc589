"""LightningDataModules split by the development-set manifest: in-memory arrays or lazy readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_modules import tasks

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
    """Train/val loaders of one development set and the shared test loader, over a `DomainData`.

    `prepare_data` reads and checks the domain's data (once per `DomainData`, whichever module asks
    first; it writes caches, so Lightning runs it on one process); `setup` picks this development
    set's samples from the split manifest. After either, the module exposes `task`, `num_outputs`,
    `label_names`, `channels`, `labels`, `images` or `reader`, `manifest` (sample_id, patient_id,
    partition, stage, in_d2_half, in_d1_tenth; `save_manifest(path)`) and, after `setup`, `indices`.
    """

    def __init__(self, domain, dev_set: str, batch_size: int = 64, num_workers: int = 0,
                 pin_memory: bool = False):
        super().__init__()
        self.domain, self.dev_set = domain, dev_set
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.indices: dict[str, np.ndarray] = {}

    def prepare_data(self) -> None:
        self.domain.prepare()

    def setup(self, stage: str | None = None) -> None:
        """This development set's train, val and test samples, each checked to be non-empty."""
        if not self.indices:
            manifest = self.domain.prepare().manifest
            self.indices = {part: dev_set_indices(manifest, self.dev_set, part) for part in ("train", "val", "test")}

    def __getattr__(self, name: str):
        if name in ("task", "label_names", "channels", "labels", "images", "reader", "manifest"):
            return getattr(self.domain.prepare(), name)
        raise AttributeError(name)

    @property
    def num_outputs(self) -> int:
        return tasks.num_logits(self.task, len(self.label_names))

    def save_manifest(self, path: str | Path) -> Path:
        """Write the split manifest as CSV (one row per sample) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.manifest.to_csv(path, index=False)
        return path

    def dataset(self, part: str) -> Dataset:
        self.setup()
        if self.images is not None:
            return ImageArrayDataset(self.images, self.labels, self.indices[part])
        return ReaderDataset(self.reader, self.labels, self.indices[part])

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        # The split follows the data seed; the training order follows torch's global seed (the
        # model's training seed, derived from the model's whole identity).
        return DataLoader(self.dataset(part), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
