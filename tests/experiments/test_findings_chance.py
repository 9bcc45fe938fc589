"""Pairs whose target is at chance (clean-AUC interval includes 0.5) are left out of the findings."""
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from experiments.report.findings import clean_auc_lower, finding_effects, targets_at_chance
from experiments.store.artifact_formats import Predictions

N, SEEDS, B = 80, (0, 1), 200


def attack_frame(rng, chance_targets=("t-chance",)):
    """Finding (e)'s white-box FGSM and iterative FGSM pairs on a learned and an unlearned target."""
    labels = (np.arange(N) % 2).astype(bool)
    rows, predictions = [], {}
    for seed in SEEDS:
        for target in ("t-good", "t-chance"):
            clean = rng.normal(0, 1, N) + (0 if target in chance_targets else 2.0 * labels)
            for attack, damage in (("fgsm", 0.3), ("ifgsm", 0.7)):
                run_id = f"{target}-{seed}-{attack}"
                adv = (1 - damage) * clean + damage * 3 * rng.normal(0, 1, N)
                predictions[run_id] = Predictions(labels[:, None], clean[:, None], adv[:, None], clean[:, None])
                rows.append({"domain": "d", "seed": seed, "run_id": run_id, "attack": attack, "eps": 0.02,
                             "surrogate": target, "target": target, "whitebox": True, "same_arch": True,
                             "target_init": "random", "surrogate_init": "random", "target_dev_set": "d1",
                             "surrogate_dev_set": "d1", "surrogate_arch": "cnn", "target_arch": "cnn"})
    return pd.DataFrame(rows), predictions


def test_clean_auc_interval_matches_a_plain_loop():
    frame, predictions = attack_frame(np.random.default_rng(0))
    lower = clean_auc_lower(frame, predictions, B, 3, 0.95)
    p = predictions["t-good-1-fgsm"]
    rng, aucs = np.random.default_rng(3), []
    for start in range(0, B, 100):  # the documented draws, in the same blocks
        for idx in rng.integers(0, N, (100, N)):
            aucs.append(roc_auc_score(p.labels[idx, 0], p.clean[idx, 0]))
    assert abs(lower[1, "t-good"] - np.percentile(aucs, 2.5)) < 1e-9
    assert lower[0, "t-good"] > 0.5 >= lower[0, "t-chance"]


def test_pairs_of_a_target_at_chance_are_left_out_and_counted():
    frame, predictions = attack_frame(np.random.default_rng(1))
    flags = targets_at_chance(frame, predictions, B, 0)
    assert flags.tolist() == (frame["target"] == "t-chance").tolist()
    table = finding_effects(frame, predictions, B, 0)
    good = finding_effects(frame[frame["target"] == "t-good"], predictions, B, 0)
    row, expected = table.set_index("finding").loc["e"], good.set_index("finding").loc["e"]
    assert row["left_out"] == 4 and row["runs"] == 4 and expected["left_out"] == 0
    assert row["effect"] == expected["effect"] and row["verdict"] == expected["verdict"]


def test_no_verdict_when_every_target_is_at_chance():
    frame, predictions = attack_frame(np.random.default_rng(2), chance_targets=("t-good", "t-chance"))
    row = finding_effects(frame, predictions, B, 0).set_index("finding").loc["e"]
    assert row["verdict"] == "no verdict" and row["left_out"] == 8 and np.isnan(row["effect"])
