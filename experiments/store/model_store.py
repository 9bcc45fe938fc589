"""Trained models in MLflow: one run per model (tag kind=model), found again by its config hash."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lightning_modules import ClassifierModule

from ..design.locations import default_tracking_uri
from .tracking import numbers, worker_name

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
                        best_val_auc: float, params: dict) -> None:
    """Store the plain nn.Module's state dict as the run's checkpoint, log the numeric `params` (the
    run's) as metrics too (`numbers`: filterable by range) and close the run as FINISHED."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CHECKPOINT_ARTIFACT).name
        torch.save(model.state_dict(), path)
        client.log_artifact(run_id, str(path), str(Path(CHECKPOINT_ARTIFACT).parent))
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in {**numbers(params), "best_val_auc": best_val_auc}.items()]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def stored_module(client: MlflowClient, run, name: str = "", **options) -> ClassifierModule:
    """A stored model rebuilt from its run alone (its checkpoint, logged `arch` and layout; no image
    is read), in eval mode; `options`: the `ClassifierModule`'s training settings (lr, adversary, ...).
    Problems are one line naming the run (and zoo model `name`)."""
    params, where = run.data.params, f"MLflow run {run.info.run_id}" + (f" (model {name})" if name else "")
    missing = [key for key in ("arch", "layout.task", "layout.num_outputs", "layout.channels") if key not in params]
    if missing or run.data.tags.get("kind") != "model":
        raise ValueError(f"{where}: not a medtransfer model run (tag kind=model, params "
                         "arch and layout.*)")
    if run.info.status != "FINISHED":
        raise ValueError(f"{where}: a model run that did not finish ({run.info.status})")
    sizes = [params[f"layout.{key}"] for key in ("num_outputs", "channels")]
    for key, value in zip(("num_outputs", "channels"), sizes):
        if not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"{where}: param layout.{key}={value!r} must be a whole number >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        local = download_checkpoint(client, run.info.run_id, tmp)
        try:
            module = ClassifierModule(params["arch"], f"checkpoint:{local}", params["layout.task"],
                                      int(sizes[0]), int(sizes[1]), **options)
        except ValueError as err:  # named by its run, not by the temporary download
            raise ValueError(f"{where}: " + str(err).replace(str(local), CHECKPOINT_ARTIFACT)) from None
    return module.eval()


def load_model(run_id: str, tracking_uri: str | None = None) -> ClassifierModule:
    """The trained model of model run `run_id` (a pair run's `surrogate_run_id` or `target_run_id`
    tag) in the store at `tracking_uri` (default: the project's), in eval mode: a LightningModule
    whose forward maps [0, 1] images to logits (`scores(task, logits)` gives the study's scores)."""
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"load_model: no run {run_id} in the store {uri}") from None
    return stored_module(client, run)


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
