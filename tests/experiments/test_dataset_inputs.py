"""Each model run names its development set and each pair run its test set as MLflow dataset inputs,
so the UI's Dataset column and dataset filter show which data a model or pair used."""
import hashlib

import pytest
from mlflow.tracking import MlflowClient

from datamodules import build_datamodule
from experiments import load_config, run_study
from experiments.design.config import preset_path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(preset_path("smoke"), [f"tracking.uri={uri}", "train.max_epochs=1", "pairs=all",
                                             "attacks=[{name: fgsm, eps: [0.02]}]", f"output_dir={root}"])
    run_study(cfg)
    client = MlflowClient(uri)
    return cfg, client, client.get_experiment_by_name("smoke").experiment_id


def expected_digest(cfg, partition: str) -> str:
    """Digest of the sample ids the split manifest assigns to `partition`, computed here."""
    manifest = build_datamodule({**cfg.data, "dev_set": "d1"}).manifest
    ids = sorted(str(s) for s in manifest.sample_id[manifest.partition == partition])
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def inputs(run) -> list[tuple[str, str, str, str]]:
    """(name, digest, context, source type) of each dataset input of a run."""
    return [(d.dataset.name, d.dataset.digest, {t.key: t.value for t in d.tags}["mlflow.data.context"],
             d.dataset.source_type) for d in run.inputs.dataset_inputs]


def test_model_runs_log_their_development_set_for_training(study):
    cfg, client, experiment = study
    models = {r.info.run_name: r for r in client.search_runs([experiment], "tags.kind = 'model'")}
    assert set(models) == {"a", "b"}
    for name, dev_set in (("a", "d1"), ("b", "d2")):
        assert inputs(models[name]) == [(f"pathology/{dev_set}", expected_digest(cfg, dev_set), "training",
                                         "medtransfer")]
    assert expected_digest(cfg, "d1") != expected_digest(cfg, "d2")


def test_pair_runs_log_the_test_set_for_evaluation(study):
    cfg, client, experiment = study
    pairs = client.search_runs([experiment], "tags.kind = 'pair'")
    assert len(pairs) == 4
    for run in pairs:
        assert inputs(run) == [("pathology/test", expected_digest(cfg, "test"), "evaluation", "medtransfer")]


def test_dataset_filter_finds_the_runs_that_used_a_set(study):
    cfg, client, experiment = study
    trained_on_d2 = client.search_runs([experiment], "dataset.name = 'pathology/d2' and dataset.context = 'training'")
    assert [r.info.run_name for r in trained_on_d2] == ["b"]
    evaluated = client.search_runs([experiment], f"dataset.digest = '{expected_digest(cfg, 'test')}'")
    assert {r.data.tags["kind"] for r in evaluated} == {"pair", "study"} and len(evaluated) == 5
