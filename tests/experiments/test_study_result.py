"""`run_study` and `plan_study` from Python: a typed `StudyResult`, a report folder and study run per
sweep variant (models and sets shared), the caller's process left as it was, quiet third-party output."""
import logging
import os
import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

import experiments
from experiments import StudyPlan, StudyResult, plan_study, run_study
from medcommon.console import CHATTY_LOGGERS, PROGRESS_BAR, quiet_third_party, terminal_bar
from experiments.design.identity import study_key
from experiments.report.findings import finding_effects
from experiments.store.run_store import RunStore
from experiments.report.tables import plain_pairs
from experiments.study_result import FINDING_COLUMNS
from experiments.preflight.facts import study_facts

TINY = ["train.max_epochs=1", "pairs=whitebox", "attacks=[{name: fgsm, eps: [0.02]}]", "bootstrap_resamples=20"]
VARIANT = ["train.max_epochs=1", "bootstrap_resamples=30"]  # fgsm and ifgsm white-box: findings (d), (e)


def runs(uri: str, kind: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    return client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}'", max_results=1000)


def process_state() -> dict:
    return {"tracking_uri": mlflow.get_tracking_uri(), "environ": dict(os.environ),
            "torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


def assert_same_state(before: dict, after: dict) -> None:
    assert after["tracking_uri"] == before["tracking_uri"]
    assert after["environ"] == before["environ"]
    assert torch.equal(after["torch"], before["torch"])
    assert after["numpy"][0] == before["numpy"][0] and np.array_equal(after["numpy"][1], before["numpy"][1])
    assert after["numpy"][2:] == before["numpy"][2:]
    assert after["python"] == before["python"]
    assert after["deterministic"] == before["deterministic"]


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    """The caller's own MLflow store set process-wide (which also sets MLFLOW_TRACKING_URI), undone after."""
    uri = f"sqlite:///{tmp_path / 'own' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def test_run_study_leaves_the_process_as_it_was_and_prints_no_third_party_lines(tmp_path, own_store, smoke_config,
                                                                                 capfd):
    cfg = smoke_config(tmp_path / "study", *TINY, "tracking.register_models=true", store=False)  # MLflow builds it  # the model registry too
    torch.manual_seed(1234)  # a caller's own RNG states, which training would otherwise reseed
    np.random.seed(1234)
    random.seed(1234)
    before = process_state()
    result = run_study(cfg)
    assert_same_state(before, process_state())
    assert isinstance(result, StudyResult) and len(result.table) == 2  # fgsm white-box on a and b
    assert not Path(own_store.removeprefix("sqlite:///")).exists()  # the study's store only
    assert runs(cfg.tracking.uri, "study")[0].info.run_id == result.study_runs["pathology"]
    err = capfd.readouterr().err
    assert "\r" not in err and "\x1b[" not in err  # no progress bar redraws into a non-terminal
    lines = err.splitlines()  # but one line per stage
    for stage in ("training a: 1/1 epoch (val_auc=", "crafting a fgsm eps=0.02: 1/1 batch", "evaluating: 2/2 set"):
        assert sum(line.startswith(stage) for line in lines) == 1, err
    for banner in ("GPU available", "TPU available", "Tip:", "litlogger", "INFO mlflow", "Creating initial MLflow",
                   "LeafSpec", "Couldn't infer the batch indices", "Trainer.fit` stopped"):
        assert banner not in err, err


def test_plan_study_leaves_the_process_as_it_was(tmp_path, own_store, smoke_config):
    cfg = smoke_config(tmp_path, *TINY, store=False)
    before = process_state()
    plan = plan_study(cfg)
    assert_same_state(before, process_state())
    assert isinstance(plan, StudyPlan) and not plan.problems and plan.domains["pathology"].pairs == 2
    assert not (tmp_path / "mlflow.db").exists()  # a plan writes nothing


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory, smoke_config):
    """Two variants of study `smoke` in one store and output folder (they differ in their bootstrap
    resamples): (config, result, model runs after it) for each."""
    root = tmp_path_factory.mktemp("variants")
    done = []
    for resamples in (30, 40):
        cfg = smoke_config(root, *VARIANT, f"bootstrap_resamples={resamples}")
        result = run_study(cfg)
        done.append((cfg, result, len(runs(cfg.tracking.uri, "model"))))
    return done


def test_each_variant_has_its_report_folder_and_study_run_and_reuses_the_models(two_variants):
    (first_cfg, first, first_models), (second_cfg, second, second_models) = two_variants
    assert first_models == second_models == 2  # the second variant trained no model
    for cfg, result in ((first_cfg, first), (second_cfg, second)):
        key = study_key(cfg, study_facts(cfg))[:8]
        assert result.reports == {"pathology": Path(cfg.output_dir) / "smoke" / key / "report"}
        assert result.study_run_names == {"pathology": f"smoke-{key}"}
        report = pd.read_csv(result.reports["pathology"] / "results.csv")  # its own rows, not emptied by the other
        assert list(report["run_id"]) == list(result.table["run_id"])
        assert (result.reports["pathology"] / "findings.csv").is_file()
    assert first.reports["pathology"] != second.reports["pathology"]
    assert set(first.table["run_id"]).isdisjoint(second.table["run_id"])  # other pair identities
    studies = {r.info.run_id: r.info.run_name for r in runs(first_cfg.tracking.uri, "study")}
    assert studies == {first.study_runs["pathology"]: first.study_run_names["pathology"],
                       second.study_runs["pathology"]: second.study_run_names["pathology"]}
    assert len(set(studies.values())) == 2
    client = MlflowClient(first_cfg.tracking.uri)
    assert first.experiment_name == second.experiment_name == "smoke"  # one experiment for the name
    assert first.experiment_id == second.experiment_id == client.get_experiment_by_name("smoke").experiment_id
    assert second.links["pathology"].endswith(f"/runs/{second.study_runs['pathology']}?workflowType=machine_learning")


def test_study_result_findings_are_the_findings_modules(two_variants):
    cfg, result, _ = two_variants[0]
    predictions = RunStore.existing(cfg.tracking.uri, result.experiment_name).predictions(result.table["run_id"])
    expected = finding_effects(plain_pairs(result.table), predictions, cfg.bootstrap_resamples, cfg.seed)
    assert list(result.findings.columns) == FINDING_COLUMNS and set(result.findings["finding"]) == {"d", "e"}
    pd.testing.assert_frame_equal(result.findings, expected[FINDING_COLUMNS])
    written = pd.read_csv(result.reports["pathology"] / "findings.csv")
    np.testing.assert_allclose(result.findings[["effect", "lo", "hi"]], written[["effect", "lo", "hi"]], atol=1e-9)


def test_the_package_shows_its_lazy_names():
    names = dir(experiments)
    assert {"StudyResult", "StudyPlan", "run_study", "plan_study", "load_config"} <= set(names)
    assert run_study.__annotations__["return"] == "StudyResult"
    assert plan_study.__annotations__["return"] == "StudyPlan"


def test_quiet_third_party_is_undone_after_and_verbose_leaves_the_loggers_alone():
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels, bars = [logger.level for logger in loggers], os.environ.get(PROGRESS_BAR)
    with quiet_third_party():
        assert not any(logger.isEnabledFor(logging.INFO) for logger in loggers)
        assert os.environ[PROGRESS_BAR] == "false"
    assert [logger.level for logger in loggers] == levels and os.environ.get(PROGRESS_BAR) == bars
    with quiet_third_party(verbose=True):
        assert [logger.level for logger in loggers] == levels and os.environ.get(PROGRESS_BAR) == bars


def test_a_stage_off_a_terminal_is_one_line_when_it_ends_and_none_when_it_fails(capfd):
    with terminal_bar(iterable=[1, 2, 3], desc="evaluating", unit="set") as bar:
        assert sum(bar) == 6
    with pytest.raises(RuntimeError), terminal_bar(total=4, desc="crafting x", unit="batch") as bar:
        bar.update()
        raise RuntimeError("stopped")
    [line] = capfd.readouterr().err.splitlines()
    assert line.startswith("evaluating: 3/3 set in ") and line.endswith(" s")
