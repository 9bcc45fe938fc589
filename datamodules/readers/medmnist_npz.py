"""MedMNIST+ .npz files (PathMNIST, ChestMNIST, RetinaMNIST at 28/64/128/224) via the medmnist
package, downloads off."""
from __future__ import annotations

import zipfile
from pathlib import Path

import medmnist
import numpy as np
import torch

from .images import require_dir, require_file
from .source import Source

FLAGS = {"pathmnist": medmnist.PathMNIST, "chestmnist": medmnist.ChestMNIST, "retinamnist": medmnist.RetinaMNIST}
DEFAULT_FLAG = {"pathology": "pathmnist", "radiology": "chestmnist", "ophthalmology": "retinamnist"}
SPLITS = ("train", "val", "test")


def npz_path(root: Path, flag: str, size: int) -> Path:
    return root / f"{flag}{'' if size == 28 else f'_{size}'}.npz"


class ArrayReader:
    """index -> uint8 (C, size, size) from NHW / NHWC arrays, resized per item."""

    def __init__(self, images: np.ndarray, size: int):
        self.images, self.size = images, size

    def __call__(self, i: int) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(self.images[i]))
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
        if image.shape[-1] != self.size:
            image = torch.nn.functional.interpolate(image[None].float(), size=(self.size, self.size),
                                                    mode="bilinear", antialias=True, align_corners=False)
            image = image[0].round().clamp(0, 255).to(torch.uint8)
        return image


def check_pixels(images: np.ndarray, where: str) -> None:
    """Grey (N, H, W) or RGB (N, H, W, 3) uint8 images; NaN or inf pixels are named first."""
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{where}: sample {int(np.argmax(bad))} has NaN or inf pixels")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"{where}: images must be (N, H, W) grey or (N, H, W, 3) RGB, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must hold uint8 pixels, got {images.dtype}")


def read_medmnist(root: str | Path, flag: str, npz_size: int, size: int) -> Source:
    """The npz's train+val splits are the development pool, its test split the test set.
    RetinaMNIST's 5 grades become binary referable DR (grade >= 2) as in the paper; PathMNIST stays
    9-class, ChestMNIST 14-label. Samples carry no patient ids, so each is its own patient."""
    if flag not in FLAGS:
        raise ValueError(f"data.flag: unknown MedMNIST flag {flag!r}; valid: {', '.join(FLAGS)}")
    root = require_dir(Path(root))
    cls = FLAGS[flag]
    if npz_size not in cls.available_sizes:
        raise ValueError(f"data.npz_size: {flag} comes in sizes {cls.available_sizes}, not {npz_size}")
    path = require_file(npz_path(root, flag, npz_size), "MedMNIST file")
    images, labels, sample_ids, test_mask = [], [], [], []
    for split in SPLITS:
        try:
            data = cls(split=split, root=str(root), size=npz_size, download=False)
            imgs, labs = np.asarray(data.imgs), np.asarray(data.labels)
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: unreadable MedMNIST file ({err.__class__.__name__}: "
                             f"{' '.join(str(err).split())[:100]})") from None
        if len(imgs) != len(labs):
            raise ValueError(f"{path}: {split}_images has {len(imgs)} rows but {split}_labels {len(labs)}")
        check_pixels(imgs, f"{path}: {split}_images")
        images.append(imgs)
        labels.append(labs)
        sample_ids += [f"{split}:{i}" for i in range(len(imgs))]
        test_mask.append(np.full(len(imgs), split == "test"))
    info = medmnist.INFO[flag]
    labels = np.concatenate(labels).astype(np.int64)
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    if flag == "retinamnist":
        labels, names, task = (labels[:, 0] >= 2).astype(np.int64), ["referable_dr"], "binary"
    elif flag == "pathmnist":
        labels, task = labels[:, 0], "multiclass"
    else:
        task = "multilabel"
    bad = (labels < 0) | (labels >= (len(names) if task == "multiclass" else 2))
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{path}: sample {sample_ids[row]}: unknown label {labels[row]!r}")
    images = np.concatenate(images)
    sample_ids = np.asarray(sample_ids)
    return Source(labels=torch.from_numpy(labels), patients=sample_ids, sample_ids=sample_ids, task=task,
                  label_names=names, channels=1 if images.ndim == 3 else 3, reader=ArrayReader(images, size),
                  test_mask=np.concatenate(test_mask))
