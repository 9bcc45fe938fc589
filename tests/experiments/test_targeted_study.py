"""A study with a targeted L2 attack: the pair runs and the results table carry its targeted success
rate, counted here again from the logged predictions and the targets stored with the set."""
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from attacks import AdversarialSetCache
from experiments import run_study
from experiments.execution.evaluation import load_test_set
from experiments.execution.work import read_data

ATTACKS = ("attacks=[{name: ifgsm, eps: [0.02]}, {name: ifgsm, eps: [1.0], params: {alpha: 0.2, steps: 5}, "
           "norm: l2, target: '1'}]")


@pytest.mark.slow
def test_targeted_success_is_logged_and_counted_over_the_images_with_a_target(smoke_config, tmp_path):
    cfg = smoke_config(tmp_path, ATTACKS, "train.max_epochs=1", "bootstrap_resamples=20")
    table = run_study(cfg).table
    targeted = table[table.attack_target == "1"]
    assert len(targeted) == 4 and set(targeted.norm) == {"l2"}
    assert table[table.attack_target == "untargeted"].targeted_success.isna().all()
    assert (targeted.l2 <= 1.0 + 1e-5).all() and (targeted.linf > 0.02).any()  # an L2 budget, not L-inf
    client = MlflowClient(cfg.tracking.uri)
    test = load_test_set(read_data(cfg).datamodule("d1"))
    cache = AdversarialSetCache(tmp_path / "adversarial_sets")
    for row in targeted.itertuples():
        run = client.get_run(row.run_id)
        assert run.data.params["attack.target"] == "1" and run.data.params["attack.norm"] == "l2"
        targets = cache.targets(run.data.tags["set_key"], test.batches())
        assert ((targets == -1) == (test.labels == 1)).all()  # class 1 already: no target
        pred = pd.read_csv(client.download_artifacts(row.run_id, "predictions.csv", str(tmp_path)))
        counted = pred.label == 0
        expected = ((pred.adv[counted] >= 0.5)).mean()
        for value in (run.data.metrics["targeted_success"], row.targeted_success):
            assert value == pytest.approx(expected, abs=1e-9)
        assert row.targeted_success_lo <= row.targeted_success <= row.targeted_success_hi
