"""Both attack success rates (over clean-correct decisions, over all decisions) and their bootstrap
intervals against counts made here by hand on fixed prediction vectors."""
import numpy as np
import pytest
import torch

from experiments.execution.evaluation import TestSet, evaluate_pair
from experiments.report.bootstrap import PairedBootstrap

# binary: 10 images; decisions at 0.5
LABELS = [1, 1, 1, 0, 0, 0, 1, 0, 1, 0]
CLEAN = [0.9, 0.8, 0.3, 0.2, 0.1, 0.7, 0.6, 0.4, 0.55, 0.45]  # correct: all but images 2 and 5
ADV = [0.2, 0.9, 0.1, 0.6, 0.3, 0.9, 0.4, 0.45, 0.7, 0.8]


def by_hand(labels, clean, adv):
    """(asr_correct, asr_all) counted decision by decision."""
    flipped = correct = wrong = decisions = 0
    for y, c, a in zip(labels, clean, adv):
        for yj, cj, aj in (zip(y, c, a) if isinstance(y, list) else [(y, c, a)]):
            decisions += 1
            ok = int(cj >= 0.5) == yj
            bad_after = int(aj >= 0.5) != yj
            correct += ok
            flipped += ok and bad_after
            wrong += bad_after
    return flipped / correct, wrong / decisions


def scored(task, labels, clean, adv, resamples=0):
    labels, clean, adv = torch.tensor(labels), torch.tensor(clean), torch.tensor(adv)
    test = TestSet(None, labels, task, ["x", "y"][: 1 if task == "binary" else 2], list(range(len(labels))))
    bootstrap = PairedBootstrap(task, labels.numpy(), clean.numpy(), resamples, seed=4) if resamples else None
    return evaluate_pair(test, clean, adv, adv, bootstrap).metrics


def test_binary_rates_match_the_count_by_hand():
    metrics = scored("binary", LABELS, CLEAN, ADV)
    asr_correct, asr_all = by_hand(LABELS, CLEAN, ADV)
    # images 0, 3, 6 and 9 flipped; 2 and 5 wrong already
    assert (asr_correct, asr_all) == (pytest.approx(4 / 8), pytest.approx(6 / 10))
    assert metrics["asr_correct"] == pytest.approx(asr_correct) and metrics["asr_all"] == pytest.approx(asr_all)
    assert np.isnan(metrics["targeted_success"]) and np.isnan(metrics["targeted_success_lo"])


def test_multilabel_rates_count_each_label_decision():
    labels = [[1, 0], [0, 0], [1, 1], [0, 1]]
    clean = [[0.9, 0.2], [0.6, 0.1], [0.7, 0.4], [0.1, 0.8]]
    adv = [[0.4, 0.2], [0.7, 0.9], [0.8, 0.1], [0.2, 0.3]]
    metrics = scored("multilabel", labels, clean, adv)
    asr_correct, asr_all = by_hand(labels, clean, adv)
    assert metrics["asr_correct"] == pytest.approx(asr_correct) and metrics["asr_all"] == pytest.approx(asr_all)


def test_the_intervals_are_the_percentiles_of_the_rates_over_the_auc_resamples():
    resamples = 200
    metrics = scored("binary", LABELS, CLEAN, ADV, resamples)
    rng, n = np.random.default_rng(4), len(LABELS)
    rates = {"asr_correct": [], "asr_all": []}
    for _ in range(resamples):  # the documented resamples: the b-th draw of rng.integers(0, n, size=n)
        idx = rng.integers(0, n, size=n)
        asr_correct, asr_all = by_hand(*([v[i] for i in idx] for v in (LABELS, CLEAN, ADV))) \
            if any(int(CLEAN[i] >= 0.5) == LABELS[i] for i in idx) else (np.nan, None)
        rates["asr_correct"].append(asr_correct)
        rates["asr_all"].append(np.mean([int(ADV[i] >= 0.5) != LABELS[i] for i in idx]))
    for name, values in rates.items():
        values = np.array(values, dtype=float)
        lo, hi = np.percentile(values[np.isfinite(values)], [2.5, 97.5])
        assert metrics[f"{name}_lo"] == pytest.approx(lo) and metrics[f"{name}_hi"] == pytest.approx(hi)
        assert metrics[f"{name}_lo"] <= metrics[name] <= metrics[f"{name}_hi"]
