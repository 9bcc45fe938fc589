"""Hostile stores and names met by the Python interface: `load_model` on a tampered model run,
`search_pairs` with a study name that tries to widen MLflow's filter."""
import io

import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments.search import search_pairs
from experiments.store.model_store import load_model
from experiments.store.tracking import setup_experiment
from lightning_modules import build_classifier

LAYOUT = {"arch": "tiny_cnn", "layout.task": "binary", "layout.num_outputs": "1", "layout.channels": "3"}


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test adds its own runs."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def model_run(uri: str, tmp_path, checkpoint: bytes, **params) -> str:
    """A FINISHED model run as the store writes one, with this checkpoint file and these params."""
    client = MlflowClient(uri)
    run_id = client.create_run(setup_experiment(uri, "hostile"), run_name="m", tags={"kind": "model"}).info.run_id
    for key, value in {**LAYOUT, **params}.items():
        client.log_param(run_id, key, value)
    (tmp_path / "model.pt").write_bytes(checkpoint)
    client.log_artifact(run_id, str(tmp_path / "model.pt"), "checkpoint")
    client.set_terminated(run_id)
    return run_id


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_load_model_rebuilds_a_genuine_run(tracking_uri, tmp_path):
    net = build_classifier("tiny_cnn", "random", "binary", 1, 3)
    loaded = load_model(model_run(tracking_uri, tmp_path, saved(net.state_dict())), tracking_uri)
    assert not loaded.training
    for (name, mine), theirs in zip(loaded.model.state_dict().items(), net.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_load_model_refuses_a_pickled_checkpoint(tracking_uri, tmp_path, code_payload):
    run_id = model_run(tracking_uri, tmp_path, saved({"weight": code_payload}))
    with pytest.raises(ValueError) as err:
        load_model(run_id, tracking_uri)
    assert str(err.value).startswith(f"MLflow run {run_id}: checkpoint/model.pt: not a weights-only checkpoint")
    assert len(str(err.value).splitlines()) == 1 and not code_payload.marker.exists()


@pytest.mark.parametrize("key, value, says", [
    ("layout.num_outputs", "1; import os", "layout.num_outputs='1; import os' must be a whole number"),
    ("layout.channels", "-3", "layout.channels='-3' must be a whole number"),
    ("arch", "os.system", "unknown architecture"),
    ("layout.task", "regression", "regression"),
])
def test_load_model_refuses_tampered_params(tracking_uri, tmp_path, key, value, says):
    net = build_classifier("tiny_cnn", "random", "binary", 1, 3)
    run_id = model_run(tracking_uri, tmp_path, saved(net.state_dict()), **{key: value})
    with pytest.raises(ValueError) as err:
        load_model(run_id, tracking_uri)
    assert str(err.value).startswith(f"MLflow run {run_id}: ") and says in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_load_model_names_a_missing_run(tracking_uri):
    setup_experiment(tracking_uri, "hostile")
    with pytest.raises(ValueError, match=r"^load_model: no run 0{32} in the store sqlite:///"):
        load_model("0" * 32, tracking_uri)


def test_search_pairs_takes_a_study_name_literally(tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = setup_experiment(tracking_uri, "hostile")
    study = client.create_run(experiment, tags={"kind": "study", "domain": "pathology"}).info.run_id
    client.log_param(study, "study", "real")
    other = client.create_run(experiment, tags={"kind": "pair"}).info.run_id
    client.set_terminated(other)
    for name in ("x' or tags.kind = 'pair", "real' or params.study LIKE '%", "%", "real%"):
        with pytest.raises(ValueError, match="no study run named"):
            search_pairs(tracking_uri, study=name)
    assert search_pairs(tracking_uri, study="real").empty
