"""The command line as a user meets it: help texts, one-line errors and a study, in a real process;
more one-line errors through the same `main` in this process (the import of the libraries a real
process pays, about 10 s here, once per test, is what the process-level tests cover)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.design.config import preset_path


def medtransfer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "experiments", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_help_lists_commands_and_options():
    top = medtransfer("--help")
    assert top.returncode == 0 and "run" in top.stdout
    run = medtransfer("run", "--help")
    assert run.returncode == 0
    assert "--config" in run.stdout and "key=value" in run.stdout and "MLFLOW_TRACKING_URI" in run.stdout


@pytest.mark.slow  # over 5 s on 2 cores
def test_unknown_config_key_is_one_line_naming_it():
    result = medtransfer("run", "--config", str(preset_path("smoke")), "train.max_epoch=1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_epoch" in lines[0]


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1


def test_bad_epsilon_fails_before_any_work(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--config", str(preset_path("smoke")), f"tracking.uri={uri}",
                 "attacks=[{name: fgsm, eps: [1.5]}]"]) == 2
    assert "eps=1.5" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow  # over 5 s on 2 cores
def test_run_prints_table_and_ui_links(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    result = medtransfer("run", "--config", str(preset_path("smoke")), f"tracking.uri={uri}",
                         "train.max_epochs=1", "pairs=whitebox", "attacks=[{name: fgsm, eps: [0.02]}]",
                         f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pathology fgsm eps=0.02: AUC adv % of clean" in result.stdout
    [report] = (tmp_path / "out" / "smoke").glob("*/report")  # <output_dir>/<name>/<short study key>/report
    assert f"Report (tables, plots, examples): {report}\n" in result.stdout and (report / "results.csv").is_file()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    study = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")[0]
    assert f"medtransfer ui tracking.uri={uri}" in result.stdout
    assert (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{study.info.run_id}"
            "?workflowType=machine_learning") in result.stdout
    console = result.stdout + result.stderr
    assert "litlogger" not in console and "Tip:" not in console and "GPU available" not in console
    # one bar per stage: per model, per crafted set, evaluation; not Lightning's per-epoch bars
    for bar in ("training a", "training b", "crafting a fgsm eps=0.02", "crafting b fgsm eps=0.02", "evaluating"):
        assert bar in result.stderr
    assert "Epoch 0" not in console and "Sanity Checking" not in console
    kinds = sorted(r.data.tags["kind"] for r in client.search_runs([experiment.experiment_id]))
    assert kinds == ["model", "model", "pair", "pair", "study"]  # 2 trained models, 2 white-box pairs


def test_models_lists_the_architectures_the_readme_documents(capsys):
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = re.findall(r"`(\w+)`", readme.split("`medtransfer models` lists the architectures:")[1].split(".")[0])
    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(documented) >= 7 and listed == documented
