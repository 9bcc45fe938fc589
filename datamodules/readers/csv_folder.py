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
    """`task` binary: labels 0/1, 1 the positive class, which `label_names` names as the second of
    `[negative, positive]` (none given: it is named after the label column); multiclass: one name of
    `label_names` per row; multilabel: names joined by '|' (empty = none). Paths are relative to
    `root` and must stay inside it. Each file
    is checked by `check(path, where)` and read by `reader(paths, channels, size)` (DICOM: readers.dicom)."""
    root = require_dir(Path(root))
    csv = require_file(root / csv_file if not Path(csv_file).is_absolute() else Path(csv_file), "label file")
    required = [path_column, label_column] + ([patient_column] if patient_column else [])
    table = read_table(csv, required)
    if task == "binary":
        label_names = [binary_positive(list(label_names), label_column)]
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


def binary_positive(names: list[str], label_column: str) -> str:
    """The positive label's name of a binary CSV: the second of `data.labels` = [negative, positive]
    (class 0, class 1), else the label column's name."""
    if not names:
        return label_column
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"data.labels: {names}; a binary task names its two classes [negative, positive] "
                         "(the file's 0 and 1), or none")
    return names[1]


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
