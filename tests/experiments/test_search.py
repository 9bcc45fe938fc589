"""The store queried with MLflow's own client and `search_pairs`/`load_model`, on a real small study and
a second study that reuses its pairs; the building blocks used on their own."""
import subprocess
import sys
from pathlib import Path

import medtransfer
import mlflow
import pandas as pd
import pytest
import torch
import torchattacks
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from torch import nn

from attacks import craft
from datamodules import build_datamodule
from experiments.design.config import load_config, preset_path
from experiments.search import search_pairs
from experiments.store.model_store import load_model
from lightning_modules.tasks import scores

LIBRARY = Path(medtransfer.__file__).resolve().parent.parent
KEYS = ["seed", "surrogate", "target", "attack", "eps"]
ATTACKS = "attacks=[{name: fgsm, eps: [0.01, 0.03]}, {name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 3}}]"
BOOLEAN = {"true", "false"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, smoke_config):
    """The smoke study at three eps, then a second study (another name, same experiment) of its FGSM
    eps 0.03 pairs only: every pair of the second is read back from the first."""
    from experiments import run_study
    root = tmp_path_factory.mktemp("search")
    first = smoke_config(root, "train.max_epochs=1", ATTACKS)
    second = smoke_config(root, "train.max_epochs=1", "name=smoke-again", "tracking.experiment=smoke",
                          "attacks=[{name: fgsm, eps: [0.03]}]")
    return (first, run_study(first).table), (second, run_study(second).table)


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(KEYS).reset_index(drop=True)


def study_run_id(cfg) -> str:
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    found = client.search_runs([experiment], f"tags.kind = 'study' and params.study = '{cfg.name}'")
    assert len(found) == 1
    return found[0].info.run_id


def test_search_pairs_is_the_study_table(studies):
    (cfg, table), _ = studies
    assert "target_at_chance" in table.columns  # the report ran: the tags are there too
    found = search_pairs(cfg.tracking.uri, study=study_run_id(cfg))
    pd.testing.assert_frame_equal(ordered(found), ordered(table))
    by_name = search_pairs(cfg.tracking.uri, study="smoke")
    pd.testing.assert_frame_equal(ordered(by_name), ordered(table))


def test_search_pairs_rebuilds_a_later_studys_matrix(studies):
    (first_cfg, first), (cfg, table) = studies
    assert set(table.run_id) <= set(first.run_id) and len(table) == 4  # all read back, none its child
    client = MlflowClient(cfg.tracking.uri)
    parent = study_run_id(cfg)
    assert not any(client.get_run(r).data.tags["mlflow.parentRunId"] == parent for r in table.run_id)
    pd.testing.assert_frame_equal(ordered(search_pairs(cfg.tracking.uri, study="smoke-again")), ordered(table))
    # the first study's pairs are unchanged by the second's use of them
    pd.testing.assert_frame_equal(ordered(search_pairs(cfg.tracking.uri, study="smoke")), ordered(first))


def test_search_pairs_filters_by_factor(studies):
    (cfg, table), _ = studies
    found = search_pairs(cfg.tracking.uri, study="smoke", surrogate="a", attack=["fgsm"], eps=0.03)
    expected = table[(table.surrogate == "a") & (table.attack == "fgsm") & (table.eps == 0.03)]
    assert len(expected) == 2
    pd.testing.assert_frame_equal(ordered(found), ordered(expected))
    with pytest.raises(ValueError, match="search_pairs: unknown column 'epsilon'"):
        search_pairs(cfg.tracking.uri, study="smoke", epsilon=0.03)
    with pytest.raises(ValueError, match="no study run named 'nothing'"):
        search_pairs(cfg.tracking.uri, study="nothing")


@pytest.fixture
def global_store(studies, monkeypatch):
    """MLflow's process-wide store set to the studies' one (for `mlflow.search_runs`), undone after."""
    uri = studies[0][0].tracking.uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_eps_range_filter_through_mlflow(studies, global_store):
    (cfg, table), _ = studies
    experiment = MlflowClient(cfg.tracking.uri).get_experiment_by_name("smoke").experiment_id
    found = mlflow.search_runs([experiment], "tags.kind = 'pair' and metrics.`attack.eps` > 0.015 "
                               "and metrics.`attack.eps` < 0.035 and metrics.seed = 0")
    expected = table[(table.eps > 0.015) & (table.eps < 0.035)]
    assert len(expected) == 8 and set(found["run_id"]) == set(expected.run_id)
    exact = mlflow.search_runs([experiment], "tags.kind = 'pair' and metrics.`attack.eps` = 0.030")
    assert set(exact["run_id"]) == set(table.run_id[table.eps == 0.03])
    models = mlflow.search_runs([experiment], "tags.kind = 'model' and metrics.study_seed = 0 "
                                "and params.study_seed = '0'")
    assert len(models) == 2


def test_every_boolean_tag_has_one_spelling(studies):
    (cfg, _), _ = studies
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name("smoke").experiment_id
    runs = client.search_runs([experiment], "", run_view_type=ViewType.ALL, max_results=10000)
    booleans = {(key, value) for run in runs for key, value in run.data.tags.items()
                if value.lower() in BOOLEAN}
    assert {key for key, _ in booleans} >= {"same_arch", "same_init", "same_data", "whitebox", "defended",
                                            "target_at_chance"}
    assert {value for _, value in booleans} <= BOOLEAN


def test_pair_runs_name_their_models_and_load_model_scores_as_the_study(studies, tmp_path):
    (cfg, table), _ = studies
    client = MlflowClient(cfg.tracking.uri)
    row = table[(table.surrogate == "b") & (table.target == "a")].iloc[0]
    pair = client.get_run(row.run_id)
    assert client.get_run(pair.data.tags["surrogate_run_id"]).info.run_name == "b"
    target_run = pair.data.tags["target_run_id"]
    assert client.get_run(target_run).info.run_name == "a"
    model = load_model(target_run, cfg.tracking.uri)
    predictions = pd.read_csv(client.download_artifacts(row.run_id, "predictions.csv", str(tmp_path)))
    data = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    images = torch.cat([x for x, _ in data.test_dataloader()])
    assert list(predictions["sample"]) == [int(i) for i in data.indices["test"]]
    with torch.no_grad():
        mine = scores(data.task, model(images))
    torch.testing.assert_close(mine, torch.tensor(predictions["clean"].to_numpy(), dtype=torch.float32),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=f"MLflow run {row.run_id}: not a medtransfer model run"):
        load_model(row.run_id, cfg.tracking.uri)


def test_build_datamodule_with_keywords_is_the_config_built_one():
    cfg = load_config(preset_path("smoke"))
    built = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True))
    mine = build_datamodule(domain="pathology", image_size=16, num_patients=120, images_per_patient=2,
                            test_fraction=0.25)  # the smoke preset's data keys; the rest: the schema's defaults
    for stage in ("train", "val", "test"):
        assert list(mine.indices[stage]) == list(built.indices[stage])
    assert torch.equal(mine.labels, built.labels)
    assert torch.equal(next(iter(mine.test_dataloader()))[0], next(iter(built.test_dataloader()))[0])
    other = build_datamodule({"domain": "pathology", "image_size": 16, "num_patients": 120}, dev_set="d2")
    assert other.dev_set == "d2"
    with pytest.raises(ValueError, match="build_datamodule: unknown data key 'imagesize'"):
        build_datamodule(domain="pathology", imagesize=16)


def test_craft_takes_a_name_and_keywords():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    images, labels = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    mine = craft(net, images, labels, "fgsm", "multiclass", eps=0.03)
    theirs = torchattacks.FGSM(net, eps=0.03)(images, labels)
    torch.testing.assert_close(mine, theirs, atol=0, rtol=0)
    assert torch.equal(mine, craft(net, images, labels, {"name": "fgsm", "eps": 0.03}, "multiclass"))
    binary = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1)).eval()
    y = torch.tensor([0, 1, 1, 0, 1])
    x = images.clone().requires_grad_(True)
    nn.functional.binary_cross_entropy_with_logits(binary(x).squeeze(1), y.float()).backward()
    by_hand = (images + 0.03 * x.grad.sign()).clamp(0, 1)
    torch.testing.assert_close(craft(binary, images, y, "fgsm", "binary", eps=0.03), by_hand, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"attack fgsm: eps=2.0 must be in \(0, 1\]"):
        craft(net, images, labels, "fgsm", "multiclass", eps=2.0)
    with pytest.raises(ValueError, match="attack fgsm: unknown parameter 'steps'"):
        craft(net, images, labels, "fgsm", "multiclass", steps=3)
    with pytest.raises(ValueError, match="given both as keywords and in the attack's settings"):
        craft(net, images, labels, {"name": "fgsm"}, "multiclass", eps=0.03)


def python(folder, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)


def test_medtransfer_resists_a_users_attacks_module(tmp_path):
    """A user's `attacks.py` in the working folder: importing medtransfer refuses in one line naming
    it, before it runs (it would be found first) or after (it was imported already); elsewhere the
    library's package is the one found."""
    (tmp_path / "attacks.py").write_text("print('the user file ran')\n")
    first = python(tmp_path, "import medtransfer")
    last = first.stderr.strip().splitlines()[-1]
    assert first.returncode == 1 and "the user file ran" not in first.stdout
    assert last == (f"medtransfer.ShadowedPackage: medtransfer: {tmp_path / 'attacks.py'} would be imported as "
                    f"`attacks` instead of the library's {LIBRARY / 'attacks'}; rename or move it (or start Python "
                    "in another folder)")
    imported = python(tmp_path, "import sys, attacks; sys.path.pop(0); import medtransfer")
    assert f"medtransfer: {tmp_path / 'attacks.py'} is imported as `attacks`" in imported.stderr.splitlines()[-1]
    (tmp_path / "clean").mkdir()
    elsewhere = python(tmp_path / "clean", "import importlib.util, medtransfer; "
                                           "print(importlib.util.find_spec('attacks').origin)")
    assert elsewhere.stdout.strip() == str(LIBRARY / "attacks" / "__init__.py"), elsewhere.stderr


def test_medtransfer_exports_the_interface():
    from experiments.design.config import ConfigError
    from experiments.report.metrics import auc
    assert medtransfer.ConfigError is ConfigError and medtransfer.auc is auc and medtransfer.scores is scores
    assert medtransfer.search_pairs is search_pairs and medtransfer.load_model is load_model
    assert medtransfer.craft is craft and medtransfer.build_datamodule is build_datamodule
    assert medtransfer.load_config is load_config
    for name in ("py.typed", "../attacks/py.typed", "../datamodules/py.typed", "../experiments/py.typed",
                 "../lightning_modules/py.typed"):
        assert (Path(medtransfer.__file__).parent / name).is_file(), name
