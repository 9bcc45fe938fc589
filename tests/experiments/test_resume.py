"""Kill a study mid-way (a real SIGKILL), run it again: same table as an uninterrupted run, no duplicates."""
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments import run_study
from experiments.design.config import preset_path
from experiments.execution.evaluation import PAIR_METRICS

TIMINGS = {"craft_seconds", "eval_seconds"}


FAST = "train.max_epochs=2"


def finished_pairs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.kind = 'pair' and attributes.status = 'FINISHED'")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, smoke_config):
    """The uninterrupted, unsharded smoke study."""
    return run_study(smoke_config(tmp_path_factory.mktemp("reference"), FAST)).table


def assert_same_results(table, reference):
    columns = [c for c in PAIR_METRICS if c not in TIMINGS]
    keys = ["seed", "surrogate", "target", "attack", "eps"]
    assert list(table[keys].itertuples(index=False)) == list(reference[keys].itertuples(index=False))
    np.testing.assert_allclose(table[columns].to_numpy(float), reference[columns].to_numpy(float), atol=1e-6)


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_table(tmp_path, reference, smoke_config):
    cfg = smoke_config(tmp_path, FAST)
    uri = cfg.tracking.uri
    process = subprocess.Popen([sys.executable, "-m", "experiments", "run", "--config", str(preset_path("smoke")),
                                f"tracking.uri={uri}", f"output_dir={tmp_path}", FAST],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(finished_pairs(uri)) < 2:
        assert process.poll() is None, "the study ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.kill()
    process.wait()
    done_before = len(finished_pairs(uri))
    assert done_before < len(reference)

    resumed = run_study(cfg).table
    assert_same_results(resumed, reference)

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


@pytest.mark.slow
def test_union_of_shards_is_the_study(tmp_path, reference, smoke_config):
    cfg = smoke_config(tmp_path, FAST)
    uri = cfg.tracking.uri
    shards = [run_study(cfg, shard=(i, 3)).table for i in range(3)]
    assert sum(len(s) for s in shards) == len(reference)
    assert len(finished_pairs(uri)) == len(reference)
    assembled = run_study(cfg).table  # nothing left to do: reads every pair back and writes the report
    assert_same_results(assembled, reference)
    assert len(finished_pairs(uri)) == len(reference)
    union = pd.concat(shards).sort_values(["surrogate", "attack", "target"]).reset_index(drop=True)
    assert_same_results(union, reference.sort_values(["surrogate", "attack", "target"]).reset_index(drop=True))
