import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from experiments.report.bootstrap import PairedBootstrap


def reference_bootstrap(task, labels, clean, adv, n_resamples, seed, confidence=0.95):
    """A plain per-resample loop with sklearn, following the documented resampling contract."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if task == "multiclass":
        labels = np.eye(clean.shape[1], dtype=int)[labels]
    aucs = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        y = labels[idx]
        if task == "binary":
            if len(set(y)) < 2:
                continue
            aucs.append((roc_auc_score(y, clean[idx]), roc_auc_score(y, adv[idx])))
            continue
        cols = [j for j in range(y.shape[1]) if len(set(y[:, j])) == 2]
        if not cols:
            continue
        aucs.append(tuple(np.mean([roc_auc_score(y[:, j], s[idx][:, j]) for j in cols])
                          for s in (clean, adv)))
    c, a = np.array(aucs).T
    q = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
    return {"auc_adv": np.percentile(a, q), "auc_drop": np.percentile(c - a, q),
            "auc_pct_clean": np.percentile(100 * a / c, q)}


def binary_data(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    clean = np.round(y * 1.5 + rng.normal(size=n), 1)  # rounding makes ties
    adv = np.round(clean - 1.2 * y + rng.normal(scale=0.5, size=n), 1)
    return y, clean, adv


def assert_matches(result, reference):
    for name, (lo, hi) in reference.items():
        assert result[f"{name}_lo"] == pytest.approx(lo, abs=1e-9)
        assert result[f"{name}_hi"] == pytest.approx(hi, abs=1e-9)


def test_binary_matches_sklearn_loop():
    y, clean, adv = binary_data(41)
    result = PairedBootstrap("binary", y, clean, n_resamples=200, seed=3).interval(adv)
    assert_matches(result, reference_bootstrap("binary", y, clean, adv, 200, seed=3))


def test_multilabel_skips_labels_without_both_classes():
    rng = np.random.default_rng(1)
    n = 30
    y = rng.integers(0, 2, (n, 3))
    y[:, 2] = 0
    y[:2, 2] = 1  # rare label: absent from many resamples
    clean = np.clip(y * 0.4 + rng.uniform(size=(n, 3)) * 0.6, 0, 1)
    adv = np.clip(clean - 0.3 * y + rng.uniform(size=(n, 3)) * 0.2, 0, 1)
    result = PairedBootstrap("multilabel", y, clean, n_resamples=100, seed=7).interval(adv)
    assert_matches(result, reference_bootstrap("multilabel", y, clean, adv, 100, seed=7))


def test_multiclass_is_one_vs_rest_macro():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 36)
    logits = np.eye(3)[y] * 1.2 + rng.normal(size=(36, 3))
    clean = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    adv = np.roll(clean, 1, axis=0) * 0.5 + clean * 0.5
    result = PairedBootstrap("multiclass", y, clean, n_resamples=100, seed=0).interval(adv)
    assert_matches(result, reference_bootstrap("multiclass", y, clean, adv, 100, seed=0))


def test_ci_contains_point_estimate_and_narrows_with_more_samples():
    widths = []
    for n in (60, 600):
        y, clean, adv = binary_data(n, seed=5)
        result = PairedBootstrap("binary", y, clean, n_resamples=500, seed=0).interval(adv)
        auc_clean, auc_adv = roc_auc_score(y, clean), roc_auc_score(y, adv)
        assert result["auc_adv_lo"] <= auc_adv <= result["auc_adv_hi"]
        assert result["auc_drop_lo"] <= auc_clean - auc_adv <= result["auc_drop_hi"]
        assert result["auc_pct_clean_lo"] <= 100 * auc_adv / auc_clean <= result["auc_pct_clean_hi"]
        widths.append(result["auc_adv_hi"] - result["auc_adv_lo"])
    assert widths[1] < 0.6 * widths[0]  # ~ 1/sqrt(10) in theory


def test_seeded_and_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    y, clean, adv = binary_data(40)
    tensors = [torch.tensor(v) for v in (y, clean, adv)]
    a = PairedBootstrap("binary", *tensors[:2], n_resamples=50, seed=1).interval(tensors[2])
    b = PairedBootstrap("binary", y, clean, n_resamples=50, seed=1).interval(adv)
    c = PairedBootstrap("binary", y, clean, n_resamples=50, seed=2).interval(adv)
    assert a == b and a != c


def test_one_target_many_adversarial_sets_reuses_the_resamples():
    y, clean, adv = binary_data(50)
    other = adv[::-1].copy()
    target = PairedBootstrap("binary", y, clean, n_resamples=80, seed=4)
    assert_matches(target.interval(adv), reference_bootstrap("binary", y, clean, adv, 80, seed=4))
    assert_matches(target.interval(other), reference_bootstrap("binary", y, clean, other, 80, seed=4))
    with pytest.raises(ValueError, match=r"adversarial scores \(49,\) do not match clean scores \(50,\)"):
        target.interval(adv[:49])


@pytest.mark.parametrize("task, labels, scores, message", [
    ("binary", np.zeros(4), np.zeros((4, 2)), "binary needs"),
    ("multilabel", np.zeros(4), np.zeros(4), "multilabel needs"),
    ("binary", np.array([0, 1, 2, 1]), np.zeros(4), "must be 0/1"),
    ("binary", np.zeros(4), np.zeros(4), "no resample"),
    ("regression", np.zeros(4), np.zeros(4), "unknown task"),
])
def test_bad_input_is_one_clear_error(task, labels, scores, message):
    with pytest.raises(ValueError, match=message):
        PairedBootstrap(task, labels, scores, n_resamples=5).interval(scores)


def test_a_target_ranking_every_image_the_wrong_way_has_no_percent_of_clean():
    from experiments.execution.evaluation import TestSet, evaluate_pair

    labels = torch.tensor([0, 1, 0, 1])
    test = TestSet(loader=None, labels=labels, task="binary", label_names=["positive"], sample_ids=[0, 1, 2, 3])
    inverted, adv = torch.tensor([0.9, 0.1, 0.8, 0.2]), torch.tensor([0.2, 0.9, 0.6, 0.4])
    scores = evaluate_pair(test, inverted, adv, adv)
    assert scores.metrics["auc_clean"] == 0.0
    assert scores.metrics["auc_adv"] == pytest.approx(roc_auc_score(labels.numpy(), adv.numpy()))
    assert math.isnan(scores.metrics["auc_pct_clean"])
    fair = evaluate_pair(test, adv, inverted, adv).metrics
    assert fair["auc_pct_clean"] == pytest.approx(100.0 * fair["auc_adv"] / fair["auc_clean"])
