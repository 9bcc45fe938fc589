"""The reader study in MLflow: one run per reader-study identity, tagged `kind=readers`, a child of
the study's parent run in the study's experiment; logged again (metrics updated, files replaced)
each time the server stops."""
from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..store.runs import STUDY_TAG

READERS_TAG = "readers_hash"
FILES = ("answers.csv", "by_setting.csv", "by_reader.csv", "readers.md", "detection_vs_eps.png")


def study_run_id(uri: str, experiment_id: str, study_hash: str) -> str | None:
    """The parent run of the study with this identity, if the store holds one."""
    found = MlflowClient(uri).search_runs([experiment_id], f"tags.{STUDY_TAG} = '{study_hash}' and tags.kind = 'study'",
                                          max_results=1)
    return found[0].info.run_id if found else None


def metrics_of(analysis: dict, answers: int) -> dict[str, float]:
    metrics = {"answers": float(answers), "readers": float(len(analysis["readers"]))}
    for row in analysis["settings"].itertuples():
        metrics[f"detection.{row.attack}.eps_{row.eps:g}"] = row.rate
    for row in analysis["readers"].itertuples():
        metrics[f"detection.reader.{row.reader}"] = row.rate
        if row.repeats:
            metrics[f"consistency.reader.{row.reader}"] = row.consistency
    for attack, budget in analysis["budgets"].items():
        if budget is not None:
            metrics[f"chance_budget.{attack}"] = budget
    return metrics


def log_reader_run(uri: str, experiment_id: str, parent_id: str, study_hash: str, readers_hash: str,
                   params: dict, folder: Path, analysis: dict, answers: int, code: str) -> str:
    """Create or update the reader study's run from the report `folder` (`code`: the code version);
    returns its id."""
    client = MlflowClient(uri)
    found = client.search_runs([experiment_id], f"tags.{READERS_TAG} = '{readers_hash}' and tags.kind = 'readers'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {"kind": "readers", READERS_TAG: readers_hash, STUDY_TAG: study_hash,
                "mlflow.parentRunId": parent_id, "git_sha": code}
        run_id = client.create_run(experiment_id, tags=tags, run_name="reader study").info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in metrics_of(analysis, answers).items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("study_run", parent_id)])
    for name in FILES:
        if (folder / name).exists():
            client.log_artifact(run_id, str(folder / name))
    client.set_terminated(run_id)
    return run_id
