"""Trained models in MLflow: one run per model (tag kind=model), found again by its config hash."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from .tracking import worker_name

CHECKPOINT_ARTIFACT = "checkpoint/model.pt"


def find_trained(client: MlflowClient, experiment_id: str, key: str):
    """The newest FINISHED training run with config hash `key`, or None."""
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                              filter_string=f"tags.kind = 'model' and tags.config_hash = '{key}' "
                                            "and attributes.status = 'FINISHED'")
    return runs[0] if runs else None


def find_unfinished(client: MlflowClient, experiment_id: str, key: str) -> list:
    """Training runs with config hash `key` that did not finish (running, killed or failed)."""
    runs = client.search_runs([experiment_id], max_results=1000,
                              filter_string=f"tags.kind = 'model' and tags.config_hash = '{key}'")
    return [run for run in runs if run.info.status != "FINISHED"]


def download_checkpoint(client: MlflowClient, run_id: str, directory: str | Path) -> Path:
    """Fetch a training run's state-dict file into `directory`."""
    return Path(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(directory)))


def start_training_run(client: MlflowClient, experiment_id: str, key: str, name: str, params: dict) -> str:
    """Open a top-level run for one model (training runs are shared between studies, so not nested)."""
    run = client.create_run(experiment_id, run_name=name, tags={"kind": "model", "config_hash": key,
                                                                   "worker": worker_name()})
    for param_key, value in params.items():
        client.log_param(run.info.run_id, param_key, value)
    return run.info.run_id


def finish_training_run(client: MlflowClient, run_id: str, model: torch.nn.Module,
                        best_val_auc: float) -> None:
    """Store the plain nn.Module's state dict as the run's checkpoint and close the run as FINISHED."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CHECKPOINT_ARTIFACT).name
        torch.save(model.state_dict(), path)
        client.log_artifact(run_id, str(path), str(Path(CHECKPOINT_ARTIFACT).parent))
    client.log_metric(run_id, "best_val_auc", best_val_auc)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


class EpochMetrics(pl.Callback):
    """Logs every epoch's metrics (train_*, val_*) to an MLflow run, step = epoch, from rank 0."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, trainer.current_epoch)
                   for key, value in trainer.callback_metrics.items()]
        MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=metrics)
