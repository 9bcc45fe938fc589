"""Paired bootstrap confidence intervals for a target's AUC on adversarial images and its AUC drop."""
from __future__ import annotations

import math

import numpy as np

from lightning_modules.tasks import check_task

# Resamples per block: bounds the (block x samples) count matrix to about 8 MB. Counts and their
# cumulative sums are whole numbers below 2**24, so float32 holds them exactly (sums use float64).
_BLOCK_ELEMENTS = 2_000_000


def percentile_interval(resampled: np.ndarray | None, confidence: float = 0.95) -> tuple[float, float]:
    """The central `confidence` interval of resampled values, non-finite ones left out (NaNs when
    there are none): every interval medtransfer reports."""
    finite = None if resampled is None else resampled[np.isfinite(resampled)]
    if finite is None or finite.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(finite, [100.0 * (1.0 - confidence) / 2.0, 100.0 * (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


class PairedBootstrap:
    """Percentile CIs of auc_adv, auc_drop (clean - adv) and auc_pct_clean over resampled test images,
    for one target: its clean AUC per resample is computed once, then `interval` takes the target's
    scores on each adversarial set.

    Clean and adversarial AUC are computed on the same resample of test indices (paired). Resample b
    uses the indices `rng.integers(0, n, size=n)` of the b-th draw from `np.random.default_rng(seed)`.
    AUC is binary (scores (N,)), or the macro mean over labels (multilabel, scores (N, L)) or
    one-vs-rest classes (multiclass, integer labels (N,), scores (N, C)) that have both classes in
    the resample; resamples without any such label are left out.
    """

    def __init__(self, task: str, labels, clean_scores, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0):
        self.task = check_task(task)
        self.clean_shape = np.shape(clean_scores)
        self.labels, self.clean = label_matrix(self.task, labels, clean_scores)
        if n_resamples < 1:
            raise ValueError(f"paired_bootstrap: n_resamples must be >= 1, got {n_resamples}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"paired_bootstrap: confidence must be in (0, 1), got {confidence}")
        self.n_resamples, self.confidence, self.seed = n_resamples, confidence, seed
        self.auc_clean = self._resampled(self.clean)
        self.valid = ~np.isnan(self.auc_clean)
        if not self.valid.any():
            raise ValueError("paired_bootstrap: no resample has a label with both classes")

    def interval(self, adv_scores) -> dict[str, float]:
        """{auc_adv,auc_drop,auc_pct_clean}_{lo,hi} for the target's scores on one adversarial set."""
        adv = np.asarray(adv_scores, dtype=float)
        if adv.shape != self.clean_shape:
            raise ValueError(f"paired_bootstrap: adversarial scores {adv.shape} do not match clean "
                             f"scores {self.clean_shape}")
        adv = adv.reshape(self.clean.shape)
        auc_clean, auc_adv = self.auc_clean[self.valid], self._resampled(adv)[self.valid]
        result = {}
        for name, values in (("auc_adv", auc_adv), ("auc_drop", auc_clean - auc_adv),
                             ("auc_pct_clean", 100.0 * auc_adv / auc_clean)):
            result[f"{name}_lo"], result[f"{name}_hi"] = percentile_interval(values, self.confidence)
        return result

    def rate_intervals(self, rates: dict[str, tuple]) -> dict[str, float]:
        """{name}_lo, {name}_hi for each rate `name -> (hits, counted)` (per-image vectors): the ratio
        sum(hits) / sum(counted) over the same resamples of test images as the AUC intervals (all of
        them: a resample counting nothing is left out)."""
        result = {}
        for name, (hits, counted) in rates.items():
            hits, counted = np.asarray(hits, dtype=float), np.asarray(counted, dtype=float)
            if hits.shape != (len(self.labels),) or counted.shape != hits.shape:
                raise ValueError(f"paired_bootstrap: {name} counts {hits.shape}, {counted.shape} for "
                                 f"{len(self.labels)} images")
            parts = [(counts @ hits, counts @ counted) for counts in self._counts()]
            top, bottom = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            values = np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom > 0)
            result[f"{name}_lo"], result[f"{name}_hi"] = percentile_interval(values, self.confidence)
        return result

    def _counts(self):
        """Blocks of the resamples' counts (block x images): counts[b, i] is how often test image i
        occurs in resample b; the same resamples on every call."""
        rng = np.random.default_rng(self.seed)
        n = len(self.labels)
        block = max(1, _BLOCK_ELEMENTS // n)
        for start in range(0, self.n_resamples, block):
            rows = min(block, self.n_resamples - start)
            idx = np.stack([rng.integers(0, n, size=n) for _ in range(rows)])
            counts = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n)
            yield counts.reshape(rows, n).astype(np.float32)

    def _resampled(self, scores: np.ndarray) -> np.ndarray:
        """Macro AUC of `scores` on each resample (the same resamples on every call)."""
        return np.concatenate([resampled_macro_auc(counts, self.labels, scores) for counts in self._counts()])


def label_matrix(task: str, labels, scores):
    """Labels (bool) and scores as (N, L) arrays, one column per binary AUC that the macro mean averages."""
    y, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if task == "multiclass":
        if y.ndim != 1 or scores.ndim != 2:
            raise ValueError(f"paired_bootstrap: multiclass needs labels (N,) and scores (N, C), "
                             f"got {y.shape} and {scores.shape}")
        y = y.astype(int)[:, None] == np.arange(scores.shape[1])[None, :]
    elif task == "binary":
        if y.ndim != 1 or scores.ndim != 1:
            raise ValueError(f"paired_bootstrap: binary needs labels (N,) and scores (N,), "
                             f"got {y.shape} and {scores.shape}")
        y, scores = y[:, None], scores[:, None]
    elif y.ndim != 2:
        raise ValueError(f"paired_bootstrap: multilabel needs labels (N, L), got {y.shape}")
    if y.shape != scores.shape or len(y) == 0:
        raise ValueError(f"paired_bootstrap: labels {y.shape} do not match scores {scores.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("paired_bootstrap: labels must be 0/1 (class indices for multiclass)")
    return y.astype(bool), scores


def resampled_macro_auc(counts: np.ndarray, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Macro AUC per resample; counts[b, i] is how often test image i occurs in resample b."""
    per_label = np.stack([_resampled_auc(counts, y[:, j], scores[:, j]) for j in range(y.shape[1])], axis=1)
    valid = ~np.isnan(per_label)
    total = np.where(valid, per_label, 0.0).sum(axis=1)
    used = valid.sum(axis=1)
    return np.divide(total, used, out=np.full(len(total), np.nan), where=used > 0)


def _resampled_auc(counts: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) of one label for each resample, NaN without both classes."""
    neg_scores, pos_scores = scores[~positive], scores[positive]
    neg_order = np.argsort(neg_scores, kind="stable")
    sorted_neg = neg_scores[neg_order]
    # cumulative count of negatives up to each sorted position, per resample, with a leading zero
    neg_cum = np.zeros((len(counts), len(sorted_neg) + 1), dtype=np.float32)
    np.cumsum(counts[:, np.flatnonzero(~positive)[neg_order]], axis=1, out=neg_cum[:, 1:])
    below = neg_cum[:, np.searchsorted(sorted_neg, pos_scores, side="left")]
    up_to = neg_cum[:, np.searchsorted(sorted_neg, pos_scores, side="right")]
    pos_counts = counts[:, positive]
    wins = (pos_counts * (below + up_to)).sum(axis=1, dtype=np.float64) * 0.5
    pairs = pos_counts.sum(axis=1, dtype=np.float64) * neg_cum[:, -1].astype(np.float64)
    return np.divide(wins, pairs, out=np.full(len(wins), np.nan), where=pairs > 0)
