"""Training the model zoo with a Lightning Trainer, once per config hash (MLflow training runs)."""
from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytorch_lightning as pl
from filelock import FileLock
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from datamodules import build_datamodule
from lightning_modules import ClassifierModule
from lightning_modules.pretrained import load_state_dict_file

from .console import TrainingBar
from .datasets import log_dataset, split_dataset
from .logged_models import log_trained_model
from .model_store import (CHECKPOINT_ARTIFACT, EpochMetrics, download_checkpoint, find_trained,
                          find_unfinished, finish_training_run, start_training_run)
from .tracking import code_version, config_hash, default_tracking_uri, setup_experiment


def model_seed(study_seed: int, model_cfg: DictConfig) -> int:
    """The training seed (initial weights of every randomly initialised layer, data order) of a zoo
    model: a hash of its whole identity (architecture, init, development set, instance) and the study
    seed. Two models differing in any of these start from independent random weights; what they
    share is only what their `init` loads (ImageNet weights or a `checkpoint:` file)."""
    identity = {"arch": model_cfg.arch, "init": model_cfg.init, "dev_set": model_cfg.dev_set,
                "instance": int(model_cfg.instance), "study_seed": int(study_seed)}
    return int(config_hash(identity), 16) % 2**31


def datamodule_for(cfg: DictConfig, dev_set: str):
    return build_datamodule({**OmegaConf.to_container(cfg.data, resolve=True), "split": dev_set})


def training_settings(cfg: DictConfig, model_cfg: DictConfig) -> dict:
    """Everything that decides what a trained model is (not its name, loader options or cache folder)."""
    data = {key: value for key, value in OmegaConf.to_container(cfg.data, resolve=True).items()
            if key not in ("num_workers", "pin_memory", "cache_dir")}
    return {"arch": model_cfg.arch, "init": model_cfg.init, "dev_set": model_cfg.dev_set,
            "instance": int(model_cfg.instance), "seed": model_seed(cfg.seed, model_cfg), "data": data,
            "train": OmegaConf.to_container(cfg.train, resolve=True),
            "trainer": OmegaConf.to_container(cfg.trainer, resolve=True)}


def model_key(cfg: DictConfig, model_cfg: DictConfig) -> str:
    """The config hash of a trained model: code version and `training_settings`."""
    return config_hash({"code": code_version(), **training_settings(cfg, model_cfg)})


def flat_params(settings: dict) -> dict:
    """MLflow params: top-level keys as they are, nested ones as `section.key`."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def classifier(cfg: DictConfig, model_cfg: DictConfig, data, init: str) -> ClassifierModule:
    return ClassifierModule(model_cfg.arch, init, data.task, data.num_outputs, data.channels,
                            lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def initial_module(cfg: DictConfig, model_cfg: DictConfig, data) -> ClassifierModule:
    """The zoo model before training, with global RNGs seeded by its `model_seed` (which also fixes
    the training data order that follows)."""
    pl.seed_everything(model_seed(cfg.seed, model_cfg), workers=True, verbose=False)
    return classifier(cfg, model_cfg, data, model_cfg.init)


def train_model(cfg: DictConfig, model_cfg: DictConfig) -> tuple[ClassifierModule, float]:
    """The zoo model `model_cfg` on its development set, in eval mode, and its best validation AUC.

    A FINISHED MLflow run of the study's experiment with the same config hash (code version, data,
    model, train and trainer settings) is reused; otherwise the model is trained and logged as a new run.
    A lock per config hash under `output_dir/locks` makes concurrent processes wait for the one that
    trains; inside it, an unfinished run of the hash is stale (a killed process) and is deleted.
    A Ctrl-C ends the training run KILLED, any other error FAILED.
    """
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    client = MlflowClient(uri)
    settings = training_settings(cfg, model_cfg)
    key = model_key(cfg, model_cfg)
    data = datamodule_for(cfg, model_cfg.dev_set)

    lock_dir = Path(cfg.output_dir) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"model-{key}.lock")):
        found = find_trained(client, experiment_id, key)
        if found is not None:
            with tempfile.TemporaryDirectory() as tmp:
                local = download_checkpoint(client, found.info.run_id, tmp)
                try:
                    module = classifier(cfg, model_cfg, data, f"checkpoint:{local}")
                except ValueError as err:  # named by its run, not by the temporary download
                    raise ValueError(f"MLflow run {found.info.run_id} (model {model_cfg.name}): "
                                     + str(err).replace(str(local), CHECKPOINT_ARTIFACT)) from None
            return module.eval(), float(found.data.metrics["best_val_auc"])

        for stale in find_unfinished(client, experiment_id, key):
            client.delete_run(stale.info.run_id)
        run_id = start_training_run(client, experiment_id, key, model_cfg.name, flat_params(settings))
        try:
            log_dataset(client, run_id, split_dataset(cfg.data, data, model_cfg.dev_set), "training")
            module = initial_module(cfg, model_cfg, data)
            best_val_auc = fit(module, data, cfg, EpochMetrics(uri, run_id),
                               TrainingBar(model_cfg.name, cfg.train.max_epochs), progress=False)
            if cfg.tracking.register_models:
                log_trained_model(client, experiment_id, run_id, model_cfg.name, module.model, settings, data)
            finish_training_run(client, run_id, module.model, best_val_auc)
        except KeyboardInterrupt:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
    return module.eval(), best_val_auc


def fit(module: ClassifierModule, data, cfg: DictConfig, *callbacks: pl.Callback,
        progress: bool = True) -> float:
    """Train with early stopping on val_auc; leaves the best-val_auc weights in `module`, returns that AUC."""
    patience = cfg.train.patience
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_auc", mode="max",
                               save_weights_only=True)
        stop = EarlyStopping("val_auc", mode="max", patience=patience)
        trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, accelerator=cfg.trainer.accelerator,
                             devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
                             precision=cfg.trainer.precision, logger=False, enable_model_summary=False,
                             enable_progress_bar=progress,
                             deterministic=True, callbacks=[best, stop, *callbacks])
        fit_interruptible(trainer, module, data)
        state = load_state_dict_file(best.best_model_path)
    module.load_state_dict(state)
    return float(best.best_model_score)


def fit_interruptible(trainer: pl.Trainer, module: ClassifierModule, data) -> None:
    """`trainer.fit`, with a Ctrl-C raised as KeyboardInterrupt: Lightning turns it into SystemExit(1)
    and leaves SIGINT ignored, so the handler before the fit is put back."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=data)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from exit_
        raise
    finally:
        if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
