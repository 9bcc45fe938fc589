"""MedMNIST+ .npz files: every 2-D data set of `medmnist.INFO` at each size it comes in, described by
that metadata alone (task, label names, channels); nothing is ever downloaded."""
from __future__ import annotations

import zipfile
from pathlib import Path

import medmnist
import numpy as np
import torch

from .images import require_dir, require_file
from .source import Source

# the 2-D data sets (3-D ones are volumes) and the sizes their files come in
FLAGS = {flag: getattr(medmnist, info["python_class"]).available_sizes
         for flag, info in medmnist.INFO.items() if not flag.endswith("3d")}
DEFAULT_FLAG = {"pathology": "pathmnist", "radiology": "chestmnist", "ophthalmology": "retinamnist"}
SPLITS = ("train", "val", "test")
# INFO's task -> this project's task; an ordinal grade becomes binary "grade >= threshold"
MEDMNIST_TASKS = {"binary-class": "binary", "multi-class": "multiclass", "multi-label, binary-class": "multilabel",
                  "ordinal-regression": "binary"}
ORDINAL_THRESHOLD = 2  # RetinaMNIST: referable diabetic retinopathy, grade >= 2 (as in the paper)


def npz_path(root: Path, flag: str, size: int) -> Path:
    """The official file name: `<flag>.npz` at 28 px, `<flag>_<size>.npz` otherwise."""
    return root / f"{flag}{'' if size == 28 else f'_{size}'}.npz"


def check_flag(flag: str, npz_size: int) -> None:
    if flag not in FLAGS:
        raise ValueError(f"data.flag: unknown MedMNIST flag {flag!r}; valid: {', '.join(FLAGS)}")
    if npz_size not in FLAGS[flag]:
        raise ValueError(f"data.npz_size: {flag} comes in sizes {FLAGS[flag]}, not {npz_size}")


def file_size(flag: str, image_size: int) -> int:
    """The smallest size `flag` comes in that is at least `image_size` (else its largest)."""
    sizes = FLAGS.get(flag, [28])
    return min([s for s in sizes if s >= image_size] or [max(sizes)])


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


def check_pixels(images: np.ndarray, where: str, channels: int | None = None) -> None:
    """Grey (N, H, W) or RGB (N, H, W, 3) uint8 images (the layout `channels` says, when given); NaN
    or inf pixels are named first."""
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{where}: sample {int(np.argmax(bad))} has NaN or inf pixels")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"{where}: images must be (N, H, W) grey or (N, H, W, 3) RGB, got shape {images.shape}")
    if channels is not None and (1 if images.ndim == 3 else 3) != channels:
        raise ValueError(f"{where}: medmnist.INFO gives {channels} channel(s), the images have shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: images must hold uint8 pixels, got {images.dtype}")


def label_layout(flag: str, threshold: int = ORDINAL_THRESHOLD) -> tuple[str, list[str]]:
    """(task, label names) of `flag` from `medmnist.INFO`; binary sets name their positive class."""
    info = medmnist.INFO[flag]
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    if info["task"] == "ordinal-regression":
        if not 1 <= threshold < len(names):
            raise ValueError(f"data.ordinal_threshold: {threshold}; {flag} grades run 0..{len(names) - 1}, "
                             f"so the threshold must be in 1..{len(names) - 1}")
        return "binary", [f"grade>={threshold}"]
    task = MEDMNIST_TASKS[info["task"]]
    return task, names[1:] if task == "binary" else names


def read_medmnist(root: str | Path, flag: str, npz_size: int, size: int,
                  threshold: int = ORDINAL_THRESHOLD) -> Source:
    """The npz's train+val splits are the development pool, its test split the test set. Ordinal
    grades become binary (grade >= `threshold`); other tasks stay as INFO gives them. Samples carry
    no patient ids, so each is its own patient."""
    check_flag(flag, npz_size)
    task, names = label_layout(flag, threshold)
    channels = int(medmnist.INFO[flag]["n_channels"])
    path = require_file(npz_path(require_dir(Path(root)), flag, npz_size), "MedMNIST file")
    images, labels, sample_ids, test_mask = [], [], [], []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for split in SPLITS:
                imgs, labs = np.asarray(npz[f"{split}_images"]), np.asarray(npz[f"{split}_labels"])
                if len(imgs) != len(labs):
                    raise ValueError(f"{path}: {split}_images has {len(imgs)} rows but {split}_labels {len(labs)}")
                check_pixels(imgs, f"{path}: {split}_images", channels)
                if imgs.shape[1:3] != (npz_size, npz_size):
                    raise ValueError(f"{path}: {split}_images are {imgs.shape[1]}x{imgs.shape[2]}, "
                                     f"not {npz_size}x{npz_size}")
                images.append(imgs)
                labels.append(labs.reshape(len(labs), -1))
                sample_ids += [f"{split}:{i}" for i in range(len(imgs))]
                test_mask.append(np.full(len(imgs), split == "test"))
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: unreadable MedMNIST file ({' '.join(str(err).split())[:100]})") from None
    except (KeyError, OSError, EOFError, TypeError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: unreadable MedMNIST file ({err.__class__.__name__}: "
                         f"{' '.join(str(err).split())[:100]})") from None
    labels = np.concatenate(labels)
    classes = len(medmnist.INFO[flag]["label"])
    width = classes if task == "multilabel" else 1
    if labels.shape[1] != width:
        raise ValueError(f"{path}: labels have {labels.shape[1]} column(s); {flag} has {width}")
    labels = class_indices(labels, classes if task != "multilabel" else 2, path, sample_ids)
    if medmnist.INFO[flag]["task"] == "ordinal-regression":
        labels = labels >= threshold
    labels = labels[:, 0] if task != "multilabel" else labels
    sample_ids = np.asarray(sample_ids)
    return Source(labels=torch.from_numpy(labels.astype(np.int64)), patients=sample_ids, sample_ids=sample_ids,
                  task=task, label_names=names, channels=channels,
                  reader=ArrayReader(np.concatenate(images), size), test_mask=np.concatenate(test_mask))


def class_indices(labels: np.ndarray, classes: int, path: Path, sample_ids: list[str]) -> np.ndarray:
    """`labels` as int64 class indices 0..classes-1; anything else (a fraction, NaN, a negative or
    too large index, text) names the file and its first bad sample."""
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"{path}: labels must be whole class indices, got dtype {labels.dtype}")
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(labels.astype(np.float64)) & (labels == np.round(labels))
        bad = ~whole | (labels < 0) | (labels >= classes)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{path}: sample {sample_ids[row]}: label {labels[row].tolist()!r} is not a whole "
                         f"class index 0..{classes - 1}")
    return labels.astype(np.int64)
