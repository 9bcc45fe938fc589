"""End to end: a tiny study, read back from the MLflow store and checked against sklearn."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from experiments import run_study
from experiments.design.identity import study_key
from experiments.preflight.facts import study_facts


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, smoke_config):
    cfg = smoke_config(tmp_path_factory.mktemp("study"), "train.max_epochs=3")
    return cfg, run_study(cfg).table, cfg.tracking.uri


def test_table_has_one_row_per_pair_and_setting(smoke_study):
    cfg, table, _ = smoke_study
    expected = {(s, t, a, e) for s in ("a", "b") for t in ("a", "b") for a, e in (("fgsm", 0.02), ("ifgsm", 0.02))}
    assert set(zip(table.surrogate, table.target, table.attack, table.eps)) == expected
    assert len(table) == len(expected)
    np.testing.assert_allclose(table.auc_pct_clean, 100 * table.auc_adv / table.auc_clean, rtol=1e-9)


def test_mlflow_parent_child_structure(smoke_study):
    cfg, table, uri = smoke_study
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    parents = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    children = client.search_runs([experiment.experiment_id], "tags.kind = 'pair'", max_results=1000)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["pairs"] == "all"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len(children) == len(table)
    for child in children:
        p, m, tags = child.data.params, child.data.metrics, child.data.tags
        row = table[(table.surrogate == p["surrogate.name"]) & (table.target == p["target.name"])
                    & (table.attack == p["attack.name"]) & (table.eps == float(p["attack.eps"]))]
        assert len(row) == 1
        for key in ("auc_clean", "auc_adv", "auc_control", "asr_correct", "asr_all", "linf"):
            assert m[key] == pytest.approx(float(row[key].iloc[0]), nan_ok=True)
        assert p["seed"] == "0" and p["data.domain"] == "pathology"
        assert tags["same_data"] == str(p["surrogate.dev_set"] == p["target.dev_set"]).lower()
        assert tags["whitebox"] == str(p["surrogate.name"] == p["target.name"]).lower()
        assert tags["domain"] == "pathology" and len(tags["config_hash"]) == 16 and tags["git_sha"]
        assert m["linf"] <= float(p["attack.eps"]) + 1e-6


def test_logged_aucs_match_sklearn_on_logged_predictions(smoke_study, tmp_path):
    _, table, uri = smoke_study
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    children = client.search_runs([experiment.experiment_id], "tags.whitebox = 'true'", max_results=100)
    assert children
    for child in children:
        path = client.download_artifacts(child.info.run_id, "predictions.csv", str(tmp_path))
        pred = pd.read_csv(path)
        m = child.data.metrics
        for kind in ("clean", "adv", "control"):
            assert m[f"auc_{kind}"] == pytest.approx(roc_auc_score(pred.label, pred[kind]), abs=1e-6)
        correct = (pred.clean >= 0.5).astype(int) == pred.label
        flipped = (pred.adv[correct] >= 0.5).astype(int) != pred.label[correct]
        assert m["asr_correct"] == pytest.approx(flipped.mean(), abs=1e-6)
        assert m["asr_all"] == pytest.approx(((pred.adv >= 0.5).astype(int) != pred.label).mean(), abs=1e-6)


def test_whitebox_attack_hurts_more_than_control_noise(smoke_study):
    _, table, _ = smoke_study
    whitebox = table[(table.surrogate == table.target) & (table.attack == "ifgsm")]
    assert (whitebox.auc_adv < whitebox.auc_control).all()


def test_report_files_and_parent_artifacts(smoke_study, tmp_path):
    cfg, table, uri = smoke_study
    key = study_key(cfg, study_facts(cfg))
    report = Path(cfg.output_dir) / "smoke" / key[:8] / "report"  # the variant's own folder
    assert pd.read_csv(report / "results.csv")[["surrogate", "target", "auc_adv"]].equals(
        table[["surrogate", "target", "auc_adv"]])
    manifest = pd.read_csv(report / "split_manifest.csv")
    assert len(manifest) == cfg.data.num_patients * cfg.data.images_per_patient
    test_patients = set(manifest.patient_id[manifest.partition == "test"])
    assert test_patients.isdisjoint(manifest.patient_id[manifest.partition != "test"])
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    parent, = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    assert parent.info.run_name == f"smoke-{key[:8]}"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "split_manifest.csv", "config.yaml", "examples_pathology.png",
            "transfer_pathology_fgsm_eps0.02.png", "table4_development_data_manuscript.md"} <= logged


def test_bootstrap_interval_brackets_the_adversarial_auc(smoke_study):
    _, table, _ = smoke_study
    assert (table.auc_adv_lo <= table.auc_adv + 1e-9).all() and (table.auc_adv <= table.auc_adv_hi + 1e-9).all()
    drop = table.auc_clean - table.auc_adv
    assert (table.auc_drop_lo <= drop + 1e-9).all() and (drop <= table.auc_drop_hi + 1e-9).all()


def test_domains_and_seeds_multilabel_auc_matches_sklearn(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, "train.max_epochs=1", "pairs=whitebox", "seeds=[0, 1]",
                       "domains={pathology: {}, radiology: {}}", "attacks=[{name: fgsm, eps: [0.02]}]")
    uri = cfg.tracking.uri
    result = run_study(cfg)
    table = result.table
    assert sorted(set(zip(table.domain, table.seed))) == [(d, s) for d in ("pathology", "radiology") for s in (0, 1)]
    assert len(table) == 2 * 2 * 2  # domains x seeds x white-box pairs
    assert "radiology" in result.summary and "pathology" in result.summary
    for domain, folder in result.reports.items():  # each domain's report in its sub-study's own folder
        assert folder.parent.parent == tmp_path / f"smoke-{domain}" and (folder / "results.csv").is_file()
    assert sorted(result.reports) == sorted(result.study_runs) == ["pathology", "radiology"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    assert len(client.search_runs([experiment.experiment_id], "tags.kind = 'study'")) == 2
    models = client.search_runs([experiment.experiment_id], "tags.kind = 'model'")
    assert len(models) == 2 * 2 * 2  # each model trained once per domain and seed
    child = client.search_runs([experiment.experiment_id], "tags.kind = 'pair' and tags.domain = 'radiology'")[0]
    pred = pd.read_csv(client.download_artifacts(child.info.run_id, "predictions.csv", str(tmp_path)))
    names = [c.removeprefix("label_") for c in pred.columns if c.startswith("label_")]
    assert len(names) >= 6
    for kind in ("clean", "adv"):
        per_label = [roc_auc_score(pred[f"label_{n}"], pred[f"{kind}_{n}"]) for n in names
                     if pred[f"label_{n}"].nunique() == 2]
        assert child.data.metrics[f"auc_{kind}"] == pytest.approx(np.mean(per_label), abs=1e-6)
