"""The printed MLflow UI links, opened in a real headless Chromium on a real `mlflow server`: they
land on the study's runs, not on MLflow 3's empty GenAI overview."""
import html
import re
import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from experiments.design.config import preset_path

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
pytestmark = [pytest.mark.slow,  # a study through the CLI, then Chromium on each link: about 50 s here
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed; for the MLflow UI browser test "
                                 "install it with `sudo apt-get install -y chromium` (Debian; Ubuntu: "
                                 "chromium-browser)")]
EMPTY_OVERVIEW = "No data available"


def rendered_text(url: str) -> str:
    """The text of the page's DOM after its scripts ran (one space between elements)."""
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                             "--virtual-time-budget=20000", "--dump-dom", url],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", result.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.fixture(scope="module")
def printed_links(mlflow_server, tmp_path_factory):
    """A smoke study run through the CLI against the server; (its links, experiment id, client)."""
    out = tmp_path_factory.mktemp("browser")
    result = subprocess.run([sys.executable, "-m", "experiments", "run", "--config", str(preset_path("smoke")),
                             f"tracking.uri={mlflow_server}", "tracking.experiment=browser-check",
                             "train.max_epochs=1", "pairs=whitebox", "attacks=[{name: fgsm, eps: [0.02]}]",
                             f"output_dir={out}"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    links = re.findall(r"http://\S+workflowType=machine_learning", result.stdout)
    client = MlflowClient(mlflow_server)
    return links, client.get_experiment_by_name("browser-check").experiment_id, client


def test_printed_links_point_at_the_server(printed_links, mlflow_server):
    links, experiment_id, client = printed_links
    study = client.search_runs([experiment_id], "tags.kind = 'study'")[0]
    assert links == [f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning",
                     f"{mlflow_server}/#/experiments/{experiment_id}/runs/{study.info.run_id}"
                     "?workflowType=machine_learning"]


def test_runs_link_shows_the_runs_table_with_datasets(printed_links):
    links, experiment_id, client = printed_links
    page = rendered_text(links[0])
    runs = client.search_runs([experiment_id])  # 2 models, the study, 2 white-box pairs
    assert len(runs) == 5
    assert f"{len(runs)} matching runs" in page
    assert "pathology/d1" in page and "pathology/d2" in page  # the Dataset column of the model runs
    assert EMPTY_OVERVIEW not in page


def test_study_link_shows_the_parent_run_and_its_pairs(printed_links):
    links, experiment_id, client = printed_links
    page = rendered_text(links[1])
    pairs = client.search_runs([experiment_id], "tags.kind = 'pair'")
    assert sorted(r.info.run_name for r in pairs) == ["a->a fgsm eps=0.02", "b->b fgsm eps=0.02"]
    for run in pairs:
        assert run.info.run_name in page  # listed as child runs
    assert "pathology/test" in page  # the study's evaluation data set
    assert EMPTY_OVERVIEW not in page


def test_without_the_workflow_parameter_the_ui_lands_on_the_empty_overview(printed_links, mlflow_server):
    """Why the links carry `workflowType=machine_learning`: the bare experiment page (the experiment
    is tagged for model development) still opens MLflow 3's GenAI overview."""
    _, experiment_id, client = printed_links
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    page = rendered_text(f"{mlflow_server}/#/experiments/{experiment_id}")
    assert EMPTY_OVERVIEW in page and "pathology/d1" not in page
