"""NIH ChestX-ray14: Data_Entry_2017.csv + PNGs (any folder layout under the root)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .images import ImageFileReader, PixelCap, check_image, index_images, progress, require_dir
from .source import Source
from .tables import read_table, row_ref

# The 15 outputs (docs/protocol.md): 14 findings + "No Finding".
LABEL_NAMES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
               "Hernia", "No Finding"]
CSV_NAME = "Data_Entry_2017.csv"


def read_chestxray14(root: str | Path, size: int, cap: PixelCap | None = None) -> Source:
    root, cap = require_dir(Path(root)), cap or PixelCap()
    csv = root / CSV_NAME
    table = read_table(csv, ["Image Index", "Finding Labels", "Patient ID"])
    files = index_images(root)
    labels = np.zeros((len(table), len(LABEL_NAMES)), np.int64)
    paths = []
    rows = enumerate(zip(table["Image Index"], table["Finding Labels"]))
    for i, (name, findings) in progress(rows, len(table), f"checking {csv.name}"):
        for finding in findings.split("|"):
            if finding not in LABEL_NAMES:
                raise ValueError(f"{row_ref(csv, i)}: unknown label {finding!r}")
            labels[i, LABEL_NAMES.index(finding)] = 1
        if name not in files:
            raise FileNotFoundError(f"{row_ref(csv, i)}: image {name!r} not found under {root}")
        path = files[name]  # index_images keeps only files inside the root
        check_image(path, row_ref(csv, i), cap)
        paths.append(path)
    return Source(labels=torch.from_numpy(labels), patients=table["Patient ID"].to_numpy(),
                  sample_ids=table["Image Index"].to_numpy(), task="multilabel", label_names=LABEL_NAMES,
                  channels=1, reader=ImageFileReader(paths, 1, size, max_pixels=cap.limit))
