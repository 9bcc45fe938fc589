"""Patient-disjoint development splits (docs/protocol.md): d1, d2, d2/2, d1/10 and one shared test set."""
from __future__ import annotations

import numpy as np
import pandas as pd

DEV_SETS = ("d1", "d2", "d2/2", "d1/10")
# Defaults proportional to the paper's ChestX-ray14 patient counts (docs/protocol.md): 2,797 of 30,805
# patients in the test set, the rest halved into d1 and d2, 1,400 of 14,004 of each for validation.
TEST_FRACTION = 2797 / 30805
VAL_FRACTION = 1400 / 14004


def split_manifest(patient_ids, seed: int, test_fraction: float = TEST_FRACTION,
                   val_fraction: float = VAL_FRACTION, sample_ids=None, test_mask=None) -> pd.DataFrame:
    """One row per sample: `sample_id`, `patient_id`, `partition` (test, d1, d2), `stage` (train, val,
    test), and membership flags `in_d2_half`, `in_d1_tenth`. Deterministic in `seed`; no patient is
    split. `test_mask` (per sample) fixes the test set (e.g. a data set's official test files)
    instead of drawing `test_fraction` of the patients."""
    patient_ids = np.asarray(patient_ids)
    patients = np.unique(patient_ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    if test_mask is not None:
        fixed = np.isin(patients, np.unique(patient_ids[np.asarray(test_mask, bool)]))
        order = np.concatenate([order[fixed[order]], order[~fixed[order]]])
        n_test = int(fixed.sum())
    else:
        n_test = max(1, int(round(test_fraction * len(patients))))
    rest = order[n_test:]
    halves = {"d1": rest[: len(rest) // 2], "d2": rest[len(rest) // 2:]}

    rows = {p: ("test", "test", False, False) for p in patients[order[:n_test]]}
    for partition, members in halves.items():
        n_val = max(1, int(round(val_fraction * len(members))))
        for stage, group in (("val", members[:n_val]), ("train", members[n_val:])):
            # d2/2 halves d2's training patients and keeps its validation set; d1/10 is a tenth of
            # both d1's training and validation patients.
            half = np.arange(len(group)) < (len(group) + 1) // 2 if stage == "train" else np.ones(len(group), bool)
            tenth = np.arange(len(group)) < max(1, int(round(len(group) / 10)))
            for i, p in enumerate(patients[group]):
                rows[p] = (partition, stage, partition == "d2" and bool(half[i]),
                           partition == "d1" and bool(tenth[i]))
    table = pd.DataFrame([rows[p] for p in patient_ids],
                         columns=["partition", "stage", "in_d2_half", "in_d1_tenth"])
    table.insert(0, "patient_id", patient_ids)
    table.insert(0, "sample_id", np.arange(len(patient_ids)) if sample_ids is None else np.asarray(sample_ids))
    table.index.name = "sample"
    return table


def dev_set_indices(manifest: pd.DataFrame, dev_set: str, stage: str) -> np.ndarray:
    """Sample indices of `dev_set`'s `stage` ('train' or 'val'), or of the shared test set ('test')."""
    if stage == "test":
        indices = np.flatnonzero(manifest["partition"].to_numpy() == "test")
        if len(indices) == 0:
            raise ValueError("the shared test set is empty; use more patients or a larger test_fraction")
        return indices
    if dev_set not in DEV_SETS:
        raise ValueError(f"unknown development set {dev_set!r}; valid: {', '.join(DEV_SETS)}")
    partition = dev_set[:2]
    mask = (manifest["partition"] == partition) & (manifest["stage"] == stage)
    if dev_set == "d2/2":
        mask &= manifest["in_d2_half"]
    elif dev_set == "d1/10":
        mask &= manifest["in_d1_tenth"]
    indices = np.flatnonzero(mask.to_numpy())
    if len(indices) == 0:
        raise ValueError(f"development set {dev_set} has an empty {stage} split; use more patients")
    return indices


def one_class_problem(labels, indices: np.ndarray, task: str, split: str) -> str:
    """"" unless the samples `indices` of a binary or multi-class task hold one class only (an AUC
    needs both classes: training would select on a meaningless val_auc, the test set cannot score);
    else one line naming the split (`split`, e.g. "d1 train") and its one class."""
    if task == "multilabel" or len(indices) == 0:
        return ""
    classes = np.unique(np.asarray(labels)[np.asarray(indices)])
    if len(classes) > 1:
        return ""
    return (f"{split} holds one class only (all {len(indices)} samples have label {int(classes[0])}); "
            "an AUC needs both classes: use more patients, other splits or other data")
