"""`tracking.register_models: true`: each trained model is also an MLflow logged model and a registry
version, loadable with MLflow's pyfunc loader, stored as code plus a weights-only state dict."""
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from experiments import load_config
from experiments.design.config import preset_path
from experiments.execution import read_data
from experiments.execution.training import train_model
from experiments.store.tracking import global_tracking_uri
from experiments.preflight.facts import study_facts


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("logged_models")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(preset_path("smoke"), [f"tracking.uri={uri}", "train.max_epochs=1",
                                             "tracking.register_models=true", f"output_dir={root}"])
    data = read_data(cfg)
    module = train_model(cfg, cfg.models[0], data, study_facts(cfg, data.cache)).module
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.kind = 'model'")[0]
    with global_tracking_uri(uri):  # as a user of MLflow's own loaders points them at the store (a study never does)
        yield cfg, module, client, run, root


def test_training_run_outputs_a_ready_logged_model(trained):
    cfg, _, client, run, _ = trained
    [logged] = client.search_logged_models([run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id and logged.name == "a" and logged.status == "READY"
    assert [output.model_id for output in run.outputs.model_outputs] == [logged.model_id]
    assert logged.params["arch"] == "tiny_cnn" and logged.params["dev_set"] == "d1"


def test_registered_version_predicts_like_the_trained_model(trained):
    cfg, module, client, run, _ = trained
    [version] = client.search_model_versions("name = 'smoke.a'")
    assert version.run_id == run.info.run_id and version.source.startswith("models:/m-")
    images, _ = next(iter(read_data(cfg).datamodule("d1").test_dataloader()))
    with torch.inference_mode():
        expected = torch.sigmoid(module(images).squeeze(1)).numpy()
    loaded = mlflow.pyfunc.load_model("models:/smoke.a/1")
    np.testing.assert_allclose(loaded.predict(images.numpy()), expected, rtol=1e-5, atol=1e-6)


def test_model_is_code_and_a_weights_only_state_dict(trained, tmp_path):
    cfg, module, client, run, _ = trained
    [logged] = client.search_logged_models([run.info.experiment_id])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{logged.model_id}", dst_path=str(tmp_path)))
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    assert "python_model" not in flavor and flavor["model_code_path"].endswith("pyfunc_classifier.py")
    [weights] = [local / f for f in files if f.endswith("state_dict.pt")]
    state = torch.load(weights, weights_only=True)
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(state[key], value)
