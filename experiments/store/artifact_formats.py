"""The files a run keeps that medtransfer reads back, each written and parsed here only: a pair run's
`predictions.csv` (per-sample labels and target scores) and a query run's `queries.csv` (per-image
rows of a query attack; docs/architecture.md, "MLflow contract")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

PREDICTIONS, QUERIES = "predictions.csv", "queries.csv"
PREDICTION_KINDS = ("label", "clean", "adv", "control")
# a query row's columns and their types (docs/protocol.md, "Query attacks in the report")
QUERY_TYPES = {"target": "str", "start": "str", "attack": "str", "norm": "str", "eps": "float",
               "max_queries": "int", "image": "int", "label": "int", "clean_correct": "bool", "queries": "int",
               "success": "bool"}
QUERY_COLUMNS = list(QUERY_TYPES)


@dataclass
class Predictions:
    """One pair run's per-sample labels and target scores, each (N, L) (L = 1 for binary tasks)."""
    labels: np.ndarray
    clean: np.ndarray
    adv: np.ndarray
    control: np.ndarray


def prediction_table(sample_ids, label_names: list[str], task: str, labels: torch.Tensor, clean: torch.Tensor,
                     adv: torch.Tensor, control: torch.Tensor) -> pd.DataFrame:
    """Per-sample labels and target scores on clean, adversarial and control images (one column per
    output for multi-output tasks): the `predictions.csv` table."""
    columns = {"sample": sample_ids}
    names = label_names if task != "binary" else [""]
    for kind, values in zip(PREDICTION_KINDS, (labels, clean, adv, control)):
        values = values.reshape(len(values), -1).float()
        for j, name in enumerate(names):
            columns[f"{kind}_{name}".rstrip("_")] = values[:, j].numpy()
    return pd.DataFrame(columns)


def read_predictions(frame: pd.DataFrame) -> Predictions:
    """A `predictions.csv` table (columns sample, label*, clean*, adv*, control*) as arrays."""
    parts = {}
    for kind in PREDICTION_KINDS:
        columns = [c for c in frame.columns if c == kind or c.startswith(kind + "_")]
        if not columns:
            raise ValueError(f"{PREDICTIONS} lacks the {kind} column(s)")
        parts[kind] = frame[columns].to_numpy(dtype=float)
    labels = parts["label"].astype(int)
    if labels.shape != parts["clean"].shape or len(labels) == 0:
        raise ValueError(f"{PREDICTIONS}: labels {labels.shape} do not match scores {parts['clean'].shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{PREDICTIONS}: labels must be 0/1")
    return Predictions(labels.astype(bool), parts["clean"], parts["adv"], parts["control"])


def read_query_rows(frame: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """A query run's `queries.csv` rows, checked to have the contract's columns."""
    if list(frame.columns) != QUERY_COLUMNS:
        raise ValueError(f"query run {run_id}: {QUERIES} has columns {', '.join(frame.columns)}, "
                         f"not {', '.join(QUERY_COLUMNS)}")
    return frame.astype({"clean_correct": bool, "success": bool, "target": str, "start": str})
