"""Trained zoo models where MLflow users look for models (`tracking.register_models: true`): an MLflow
logged model of the training run (the run's Models column, the experiment's Models tab) and a version
in the model registry. The model is a models-from-code pyfunc (`pyfunc_classifier.py`) whose only
artifact besides code is the weights-only state dict; no pickled object is stored."""
from __future__ import annotations

import re
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from .tracking import global_tracking_uri

CODE_FILE = Path(__file__).with_name("pyfunc_classifier.py")


def registered_name(experiment: str, model: str) -> str:
    """The registry name of zoo model `model` of an experiment (letters, digits, `-_.` only)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{experiment}.{model}")


def pip_requirements() -> list[str]:
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}", "medtransfer"]


def signature(config: dict) -> ModelSignature:
    """float32 images (N, C, H, W) of any size in, probabilities out: (N,) binary, (N, outputs) otherwise."""
    outputs = (-1,) if config["task"] == "binary" else (-1, config["num_outputs"])
    return ModelSignature(Schema([TensorSpec(np.dtype(np.float32), (-1, config["channels"], -1, -1))]),
                          Schema([TensorSpec(np.dtype(np.float32), outputs)]))


def log_trained_model(client: MlflowClient, experiment_id: str, run_id: str, name: str, model: torch.nn.Module,
                      settings: dict, layout: dict) -> str:
    """Log `model` (a zoo model's plain nn.Module, trained in run `run_id`) as an MLflow logged model
    named `name`, register it as a new version of `registered_name(experiment, name)`, and return
    the logged model's id."""
    config = {"arch": settings["arch"], "task": layout["task"], "num_outputs": int(layout["num_outputs"]),
              "channels": int(layout["channels"])}
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type="classifier",
                                        params={key: str(value) for key, value in settings.items()
                                                if not isinstance(value, dict)})
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), weights)
        with warnings.catch_warnings():  # the signature says it all; an example would be a tensor dump
            warnings.filterwarnings("ignore", ".*input example was not provided", UserWarning)
            mlflow.pyfunc.save_model(Path(tmp) / "model", python_model=str(CODE_FILE), model_config=config,
                                     artifacts={"state_dict": str(weights)}, signature=signature(config),
                                     pip_requirements=pip_requirements())
        client.log_model_artifacts(logged.model_id, str(Path(tmp) / "model"))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    registered = registered_name(client.get_experiment(experiment_id).name, name)
    try:
        client.create_registered_model(registered)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with global_tracking_uri(client.tracking_uri):  # MLflow's SQL registry reads the logged model through it
        client.create_model_version(registered, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id)
    return logged.model_id
