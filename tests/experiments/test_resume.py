"""Kill a study mid-way (a real SIGKILL), run it again: same table as an uninterrupted run, no duplicates."""
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from experiments import load_config, run_study
from experiments.config import preset_path
from experiments.study import METRICS

TIMINGS = {"craft_seconds", "eval_seconds"}


def overrides(tmp, name):
    return [f"tracking.uri=sqlite:///{tmp / name / 'mlflow.db'}", f"output_dir={tmp / name}", "train.max_epochs=2"]


def finished_pairs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.kind = 'pair' and attributes.status = 'FINISHED'")


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_table(tmp_path):
    reference = run_study(load_config(preset_path("smoke"), overrides(tmp_path, "reference")))

    args = overrides(tmp_path, "killed")
    uri = args[0].removeprefix("tracking.uri=")
    process = subprocess.Popen([sys.executable, "-m", "experiments", "run", "--config", str(preset_path("smoke")),
                                *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(finished_pairs(uri)) < 2:
        assert process.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.kill()
    process.wait()
    done_before = len(finished_pairs(uri))
    assert done_before < len(reference)

    resumed = run_study(load_config(preset_path("smoke"), args))
    columns = [c for c in METRICS if c not in TIMINGS]
    assert list(resumed[["surrogate", "target", "attack", "eps"]].itertuples(index=False)) == \
        list(reference[["surrogate", "target", "attack", "eps"]].itertuples(index=False))
    np.testing.assert_allclose(resumed[columns].to_numpy(float), reference[columns].to_numpy(float), atol=1e-6)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    pairs = client.search_runs([experiment.experiment_id], "tags.kind = 'pair'")
    assert len(pairs) == len(reference)
    assert all(r.info.status == "FINISHED" for r in pairs)
    assert len({r.data.tags["config_hash"] for r in pairs}) == len(pairs)
    studies = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    models = client.search_runs([experiment.experiment_id], "tags.kind = 'model' and attributes.status = 'FINISHED'")
    assert len(models) == 2  # the rerun reused both trained models
