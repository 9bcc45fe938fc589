"""The smoke study against a real MLflow tracking server over HTTP."""
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from experiments import run_study


@pytest.mark.slow  # a study against a real tracking server: about 30 s here with the server's start
def test_smoke_study_over_http(mlflow_server, tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, f"tracking.uri={mlflow_server}", "train.max_epochs=1",
                       "tracking.experiment=over_http")
    table = run_study(cfg).table
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("over_http")
    parent, = client.search_runs([experiment.experiment_id], "tags.kind = 'study'")
    children = client.search_runs([experiment.experiment_id], "tags.kind = 'pair'")
    models = client.search_runs([experiment.experiment_id], "tags.kind = 'model'")
    assert parent.info.status == "FINISHED" and len(models) == 2
    assert len(children) == len(table) == 8
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_key = {(c.data.params["surrogate.name"], c.data.params["target.name"], c.data.params["attack.name"]):
              c.data.metrics["auc_adv"] for c in children}
    for row in table.itertuples():
        assert by_key[(row.surrogate, row.target, row.attack)] == row.auc_adv
    # artifacts travel over HTTP too
    results = pd.read_csv(client.download_artifacts(parent.info.run_id, "results.csv", str(tmp_path)))
    assert len(results) == len(table)
