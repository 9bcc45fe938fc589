"""A generic CSV + image folder: path and label columns, optional patient column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .images import ImageFileReader, check_image, inside_root, progress, require_dir, require_file
from .source import Source
from .tables import read_table, row_ref


def read_csv_folder(root: str | Path, size: int, csv_file: str, channels: int, task: str,
                    label_names: list[str], path_column: str = "path", label_column: str = "label",
                    patient_column: str = "", check=check_image, reader=ImageFileReader) -> Source:
    """`task` binary: labels 0/1; multiclass: one name of `label_names` per row; multilabel: names
    joined by '|' (empty = none). Paths are relative to `root` and must stay inside it. Each file
    is checked by `check(path, where)` and read by `reader(paths, channels, size)` (DICOM: readers.dicom)."""
    root = require_dir(Path(root))
    csv = require_file(root / csv_file if not Path(csv_file).is_absolute() else Path(csv_file), "label file")
    required = [path_column, label_column] + ([patient_column] if patient_column else [])
    table = read_table(csv, required)
    if task == "binary":
        label_names = list(label_names) or [label_column]
    elif not label_names:
        raise ValueError(f"data.labels: list the label names for task {task!r}")
    labels, paths = [], []
    rows = enumerate(zip(table[path_column], table[label_column]))
    for i, (relative, value) in progress(rows, len(table), f"checking {csv.name}"):
        labels.append(_parse_label(value.strip(), task, label_names, row_ref(csv, i)))
        path = inside_root(root, relative, row_ref(csv, i))
        check(path, row_ref(csv, i))
        paths.append(path)
    patients = table[patient_column].to_numpy() if patient_column else table[path_column].to_numpy()
    return Source(labels=torch.tensor(np.asarray(labels), dtype=torch.long), patients=patients,
                  sample_ids=table[path_column].to_numpy(), task=task, label_names=list(label_names),
                  channels=channels, reader=reader(paths, channels, size))


def _parse_label(value: str, task: str, names: list[str], where: str):
    if task == "binary":
        if value not in ("0", "1"):
            raise ValueError(f"{where}: unknown label {value!r}; binary labels are 0 or 1")
        return int(value)
    if task == "multiclass":
        if value not in names:
            raise ValueError(f"{where}: unknown label {value!r}; valid: {', '.join(names)}")
        return names.index(value)
    row = [0] * len(names)
    for name in filter(None, value.split("|")):
        if name not in names:
            raise ValueError(f"{where}: unknown label {name!r}; valid: {', '.join(names)}")
        row[names.index(name)] = 1
    return row
