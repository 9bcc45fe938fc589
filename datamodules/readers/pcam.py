"""PatchCamelyon HDF5 files, read lazily (one h5py handle per worker process)."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from .images import require_dir, require_file
from .source import Source

SPLITS = ("train", "valid", "test")


def pcam_file(root: Path, split: str, kind: str) -> Path:
    return root / f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def _open_checked(path: Path, kind: str):
    """Open and check one file: dataset `kind` present, x uint8 (N, H, W, 3); last row readable."""
    require_file(path, "PCam HDF5 file")
    try:
        with h5py.File(path, "r") as fh:
            if kind not in fh:
                raise ValueError(f"{path}: HDF5 key {kind!r} not found (keys: {', '.join(fh.keys())})")
            data = fh[kind]
            if kind == "x" and (data.ndim != 4 or data.shape[-1] != 3):
                raise ValueError(f"{path}: HDF5 key 'x' must be (N, H, W, 3) images, got shape {data.shape}")
            if kind == "x" and data.dtype != np.uint8:
                raise ValueError(f"{path}: HDF5 key 'x' must hold uint8 pixels, got {data.dtype}")
            if len(data):
                data[len(data) - 1]  # touches the end of the data: a truncated file fails here
            return data.shape, (np.asarray(data[:]).reshape(len(data)) if kind == "y" else None)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"{path}: unreadable HDF5 file ({' '.join(str(err).split())[:120]})") from None


class PCamReader:
    """index over train+valid+test -> uint8 (3, size, size); opens the files lazily per process."""

    def __init__(self, files: list[Path], offsets: list[int], size: int):
        self.files, self.offsets, self.size = files, offsets, size
        self._handles, self._pid = None, None

    def __getstate__(self):
        return {**self.__dict__, "_handles": None, "_pid": None}

    def __call__(self, i: int) -> torch.Tensor:
        if self._pid != os.getpid():
            self._handles, self._pid = [h5py.File(f, "r")["x"] for f in self.files], os.getpid()
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        try:
            patch = self._handles[part][i - self.offsets[part]]
        except Exception as err:
            raise ValueError(f"{self.files[part]}: cannot read row {i - self.offsets[part]} ({err})") from None
        image = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)
        if image.shape[-1] != self.size:
            image = torch.nn.functional.interpolate(image[None].float(), size=(self.size, self.size),
                                                    mode="bilinear", antialias=True, align_corners=False)
            image = image[0].round().clamp(0, 255).to(torch.uint8)
        return image


def read_pcam(root: str | Path, size: int) -> Source:
    """The three PCam splits; train+valid are the development pool, PCam's test split the test set.
    Patients are unknown, so each patch is its own patient."""
    root = require_dir(Path(root))
    files, labels, sample_ids, test_mask, offsets = [], [], [], [], []
    for split in SPLITS:
        x_shape, _ = _open_checked(pcam_file(root, split, "x"), "x")
        _, y = _open_checked(pcam_file(root, split, "y"), "y")
        if len(y) != x_shape[0]:
            raise ValueError(f"{pcam_file(root, split, 'y')}: {len(y)} labels for {x_shape[0]} images")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise ValueError(f"{pcam_file(root, split, 'y')}: row {int(np.argmax(bad))}: unknown label {y[bad][0]!r}")
        offsets.append(sum(len(lab) for lab in labels))
        files.append(pcam_file(root, split, "x"))
        labels.append(y.astype(np.int64))
        sample_ids += [f"{split}:{i}" for i in range(len(y))]
        test_mask.append(np.full(len(y), split == "test"))
    sample_ids = np.asarray(sample_ids)
    return Source(labels=torch.from_numpy(np.concatenate(labels)), patients=sample_ids, sample_ids=sample_ids,
                  task="binary", label_names=["tumour"], channels=3,
                  reader=PCamReader(files, offsets, size), test_mask=np.concatenate(test_mask))
