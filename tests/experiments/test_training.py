"""Zoo training: best-validation-AUC checkpoint in an MLflow run, reused by config hash."""
import pytest
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from experiments.design.config import load_config
from experiments.design.identity import model_seed
from experiments.execution import read_data
from experiments.execution.training import initial_module, train_model
from experiments.preflight.facts import study_facts


def tiny_config(uri: str, *extra: str):
    return load_config(None, ["name=training-test", f"tracking.uri={uri}",
                              "models=[{name: m, arch: tiny_cnn}]",
                              "data.num_patients=40", "data.image_size=16", "data.batch_size=16",
                              "train.max_epochs=3", "train.lr=0.003", *extra])


def model_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("training-test")
    return client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'model'")


def val_auc_by_sklearn(cfg, module) -> float:
    images, labels = zip(*read_data(cfg).datamodule("d1").val_dataloader())
    with torch.no_grad():
        probs = torch.sigmoid(module.model(torch.cat(images))[:, 0])
    return roc_auc_score(torch.cat(labels).numpy(), probs.numpy())


def test_training_is_logged_once_and_reused(tracking_uri):
    cfg = tiny_config(tracking_uri)
    data = read_data(cfg)
    module, val_auc, run_id = train_model(cfg, cfg.models[0], data, study_facts(cfg, data.cache))
    [run] = model_runs(tracking_uri)
    assert not module.training
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(model_seed(cfg.seed, cfg.models[0]))
    assert (run.data.params["arch"], run.data.params["init"], run.data.params["data.image_size"]) == \
        ("tiny_cnn", "random", "16")
    history = MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == [0, 1, 2]
    assert val_auc == pytest.approx(max(m.value for m in history), abs=1e-6)  # the best epoch is kept
    assert val_auc == pytest.approx(val_auc_by_sklearn(cfg, module), abs=1e-5)

    data = read_data(cfg)
    again, again_auc, again_id = train_model(cfg, cfg.models[0], data, study_facts(cfg, data.cache))
    assert len(model_runs(tracking_uri)) == 1  # nothing trained
    assert (again_auc, again_id) == (val_auc, run.info.run_id) and not again.training
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, rtol=0, atol=0)

    changed = tiny_config(tracking_uri, "train.lr=0.002", "train.max_epochs=1")
    data = read_data(changed)
    train_model(changed, changed.models[0], data, study_facts(changed, data.cache))
    assert len(model_runs(tracking_uri)) == 2


def initial_weights(cfg, model_cfg) -> dict:
    """The randomly initialised weight matrices and kernels of a zoo model before training."""
    module = initial_module(cfg, model_cfg, read_data(cfg))
    return {k: v.detach().clone() for k, v in module.named_parameters() if v.dim() > 1}


def test_models_start_from_independent_weights_unless_identical(tracking_uri):
    cfg = tiny_config(tracking_uri, "models=[{name: a, arch: tiny_cnn, dev_set: d1}, {name: b, arch: tiny_cnn, "
                                    "dev_set: d2}, {name: c, arch: tiny_cnn, dev_set: d1, instance: 1}]")
    a, b, c = cfg.models
    first = initial_weights(cfg, a)
    torch.manual_seed(12345)  # whatever the global RNG state, the same model starts the same
    again = initial_weights(cfg, a)
    for name, value in first.items():
        torch.testing.assert_close(again[name], value, rtol=0, atol=0)
    for other in (b, c):  # another development set, another instance: other initial weights
        weights = initial_weights(cfg, other)
        assert all(not torch.equal(weights[k], first[k]) for k in first)
    other_seed = initial_weights(OmegaConf.merge(cfg, {"seed": 1}), a)
    assert all(not torch.equal(other_seed[k], first[k]) for k in first)
    assert len({model_seed(0, m) for m in cfg.models}) == 3  # the seed MLflow logs as param `seed`
