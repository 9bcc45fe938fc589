"""Kaggle Diabetic Retinopathy: trainLabels.csv (image, level) + JPEGs; referable = level >= 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .images import ImageFileReader, PixelCap, check_image, index_images, progress, require_dir
from .source import Source
from .tables import read_table, row_ref

CSV_NAME = "trainLabels.csv"
LEVELS = ("0", "1", "2", "3", "4")


def read_kaggle_dr(root: str | Path, size: int, cap: PixelCap | None = None) -> Source:
    root, cap = require_dir(Path(root)), cap or PixelCap()
    csv = root / CSV_NAME
    table = read_table(csv, ["image", "level"])
    files = {Path(name).stem: path for name, path in index_images(root).items()}
    labels, patients, paths = [], [], []
    rows = enumerate(zip(table["image"], table["level"]))
    for i, (name, level) in progress(rows, len(table), f"checking {csv.name}"):
        if level.strip() not in LEVELS:
            raise ValueError(f"{row_ref(csv, i)}: unknown label level={level!r}; valid: {', '.join(LEVELS)}")
        patient, _, eye = name.rpartition("_")
        if eye not in ("left", "right") or not patient:
            raise ValueError(f"{row_ref(csv, i)}: image {name!r} is not named <patient>_left|right")
        if name not in files:
            raise FileNotFoundError(f"{row_ref(csv, i)}: image {name!r} not found under {root}")
        path = files[name]  # index_images keeps only files inside the root
        check_image(path, row_ref(csv, i), cap)
        labels.append(int(level) >= 2)
        patients.append(patient)
        paths.append(path)
    return Source(labels=torch.tensor(labels, dtype=torch.long), patients=np.asarray(patients),
                  sample_ids=table["image"].to_numpy(), task="binary", label_names=["referable_dr"],
                  channels=3, reader=ImageFileReader(paths, 3, size, fov_crop=True, max_pixels=cap.limit))
