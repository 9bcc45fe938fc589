"""Training the model zoo with a Lightning Trainer, once per model identity (MLflow training runs)."""
from __future__ import annotations

import math
import signal
import tempfile
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from attacks import craft
from datamodules import DomainData
from datamodules.readers.source import positive_label
from lightning_modules import ClassifierModule, tasks
from lightning_modules.pretrained import load_state_dict_file
from medcommon.console import TrainingBar

from ..design.facts import StudyFacts
from ..design.identity import adversarial_training, model_identity, model_key, model_seed
from ..store.datasets import split_dataset
from ..store.logged_models import log_trained_model
from ..store.model_store import EpochMetrics, finish_training_run, start_training_run, stored_module
from ..store.run_store import RunStore, StudyContext
from .devices import Process


class TrainedModel(NamedTuple):
    """A zoo model in eval mode, its best validation AUC and its MLflow run id."""
    module: ClassifierModule
    val_auc: float
    run_id: str


def flat_params(settings: dict) -> dict:
    """MLflow params: top-level keys as they are, nested ones as `section.key`."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def classifier(cfg: DictConfig, model_cfg: DictConfig, layout: dict, init: str) -> ClassifierModule:
    """The zoo model's module for a task layout {task, num_outputs, channels}."""
    return ClassifierModule(model_cfg.arch, init, layout["task"], int(layout["num_outputs"]), int(layout["channels"]),
                            lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            adversary=adversary(adversarial_training(model_cfg), layout["task"]))


def adversary(setting: dict | None, task: str):
    """The attack adversarial training crafts each batch with (`attacks.craft` with `setting`), if any."""
    return partial(craft, attack_cfg=setting, task=task) if setting else None


def data_layout(data: DomainData) -> dict:
    """What a classifier needs to know about the data: task, number of outputs, channels; for a
    binary task also the positive label its one output scores (logged, never read back)."""
    layout = {"task": data.task, "num_outputs": tasks.num_logits(data.task, len(data.label_names)),
              "channels": data.channels}
    positive = positive_label(data.task, data.label_names)
    return {**layout, "positive_label": positive} if positive else layout


def initial_module(cfg: DictConfig, model_cfg: DictConfig, data: DomainData) -> ClassifierModule:
    """The zoo model before training, with global RNGs seeded by its `model_seed` (which also fixes
    the training data order that follows)."""
    pl.seed_everything(model_seed(cfg.seed, model_cfg), workers=True, verbose=False)
    return classifier(cfg, model_cfg, data_layout(data), model_cfg.init)


def load_trained(cfg: DictConfig, model_cfg: DictConfig, store: RunStore, run) -> TrainedModel:
    """A stored model from its run alone (`model_store.stored_module`; no image is read)."""
    module = stored_module(store, run, model_cfg.name, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                           adversary=adversary(adversarial_training(model_cfg), run.data.params["layout.task"]))
    return TrainedModel(module, float(run.data.metrics["best_val_auc"]), run.info.run_id)


def train_model(cfg: DictConfig, model_cfg: DictConfig, data: DomainData, facts: StudyFacts,
                group: Process | None = None, store: RunStore | None = None) -> TrainedModel:
    """The zoo model `model_cfg` trained on its development set of `data` (the study's `facts` in its
    identity) by the study's device `group` (default: this process alone), in eval mode, with its best
    validation AUC.

    A FINISHED run of the study's experiment with the same identity (`identity.model_key`) is read
    back from `store` (default: the store of `cfg`'s `StudyContext`) without touching `data`;
    otherwise the model is trained and logged as a new run. A lock per identity under
    `output_dir/locks` makes concurrent processes wait for the one that trains; inside it, an
    unfinished run of the identity is stale (a killed process) and is deleted.
    A Ctrl-C ends the training run KILLED, any other error FAILED.
    """
    store = store or RunStore.of(StudyContext.of(cfg))
    key = model_key(cfg, model_cfg, facts)
    with store.lock(f"model-{key}"):
        found = store.claim("model", key)
        if found is not None:
            return load_trained(cfg, model_cfg, store, found)

        layout = data_layout(data)
        identity = model_identity(cfg, model_cfg, facts)
        params = {**flat_params(identity), "study_seed": int(cfg.seed), **flat_params({"layout": layout})}
        run_id = start_training_run(store, key, model_cfg.name, params)
        with store.ended(run_id):
            datamodule = data.datamodule(model_cfg.dev_set)
            datamodule.setup()
            store.log_dataset(run_id, split_dataset(cfg.data, datamodule, model_cfg.dev_set), "training")
            module = initial_module(cfg, model_cfg, data)
            job = FitJob(cfg, module, OmegaConf.to_container(cfg.data, resolve=True), model_cfg.dev_set,
                         model_seed(cfg.seed, model_cfg))
            best_val_auc = (group or Process()).run(job, datamodule=datamodule, callbacks=(
                EpochMetrics(store.uri, run_id), TrainingBar(model_cfg.name, cfg.train.max_epochs)))
            if cfg.tracking.register_models:
                log_trained_model(store.client, store.experiment_id, run_id, model_cfg.name, module.model, identity,
                                  layout)
            finish_training_run(store, run_id, module.model, best_val_auc, params)
    return TrainedModel(module.eval(), best_val_auc, run_id)


@dataclass
class FitJob:
    """A zoo model's fit, run by every process of the study's device group: the main process passes
    its datamodule and its own callbacks (MLflow, progress), the others read the data themselves."""
    cfg: DictConfig
    module: ClassifierModule
    data_cfg: dict
    dev_set: str
    seed: int  # the model's seed (`initial_module`), which also orders every process's training data
    distributed: bool = field(default=True)

    def run(self, process: Process, datamodule=None, callbacks: tuple[pl.Callback, ...] = ()) -> float:
        if datamodule is None:
            pl.seed_everything(self.seed, workers=True, verbose=False)
            datamodule = process.data(self.data_cfg).datamodule(self.dev_set)
        return fit(self.module, datamodule, self.cfg, *callbacks, *process.callbacks(), progress=False,
                   plugins=process.plugins(True))


def fit(module: ClassifierModule, data, cfg: DictConfig, *callbacks: pl.Callback,
        progress: bool = True, plugins: list | None = None) -> float:
    """Train with early stopping on val_auc; leaves the best-val_auc weights in `module`, returns that
    AUC (on the main process; NaN on the others of a multi-process fit). Under a strategy that trains
    in processes it spawns (ddp_spawn), the best score is measured again on the best weights.
    `plugins`: a device group's cluster environment (`devices.Process.plugins`).

    Deterministic algorithms are used wherever PyTorch has them; the few CUDA backward passes that
    have none (e.g. adaptive average pooling, in every ResNet, DenseNet and EfficientNet) warn
    instead of stopping the fit (on the CPU every kernel is deterministic)."""
    patience = cfg.train.patience
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_auc", mode="max",
                               save_weights_only=True)
        stop = EarlyStopping("val_auc", mode="max", patience=patience)
        trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, accelerator=cfg.trainer.accelerator,
                             devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
                             precision=cfg.trainer.precision, logger=False, enable_model_summary=False,
                             enable_progress_bar=progress,
                             deterministic="warn", callbacks=[best, stop, *callbacks], plugins=plugins)
        interruptible(trainer.fit, module, datamodule=data)
        if not trainer.is_global_zero:
            return math.nan
        module.load_state_dict(load_state_dict_file(best.best_model_path))
        if best.best_model_score is not None:
            return float(best.best_model_score)
        return float(trainer.validate(module, datamodule=data, verbose=False)[0]["val_auc"])


def interruptible(trainer_call, *args, **kwargs):
    """A Trainer's fit or predict, with a Ctrl-C raised as KeyboardInterrupt: Lightning turns it into
    SystemExit(1) and leaves SIGINT ignored, so the handler from before the call is put back."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return trainer_call(*args, **kwargs)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from exit_
        raise
    finally:
        if handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)
