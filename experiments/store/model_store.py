"""Trained models in the run store: one run per model (tag kind=model), found again by its config hash."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_modules import ClassifierModule

from ..design.locations import default_tracking_uri
from .run_store import RunStore
from .tracking import numbers

CHECKPOINT_ARTIFACT = "checkpoint/model.pt"


def start_training_run(store: RunStore, key: str, name: str, params: dict) -> str:
    """Open a top-level run for one model (training runs are shared between studies, so not nested)."""
    return store.create_work("model", key, name, {}, params, context_tags=False)


def finish_training_run(store: RunStore, run_id: str, model: torch.nn.Module,
                        best_val_auc: float, params: dict) -> None:
    """Store the plain nn.Module's state dict as the run's checkpoint, log the numeric `params` (the
    run's) as metrics too (`numbers`: filterable by range); `RunStore.ended` then closes it FINISHED."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(CHECKPOINT_ARTIFACT).name
        torch.save(model.state_dict(), path)
        store.log_file(run_id, path, str(Path(CHECKPOINT_ARTIFACT).parent))
    store.log_metrics(run_id, {**numbers(params), "best_val_auc": best_val_auc})


def stored_module(store: RunStore, run, name: str = "", **options) -> ClassifierModule:
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
        local = store.download(run.info.run_id, CHECKPOINT_ARTIFACT, tmp)
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
    store = RunStore(uri, "")
    run = store.get(run_id)
    if run is None:
        raise ValueError(f"load_model: no run {run_id} in the store {uri}")
    return stored_module(store, run)


class EpochMetrics(pl.Callback):
    """Logs every epoch's metrics (train_*, val_*) to an MLflow run, step = epoch, from rank 0."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        RunStore(self.tracking_uri, "").log_metrics(self.run_id, dict(trainer.callback_metrics),
                                                    trainer.current_epoch)
