"""Training the model zoo with a Lightning Trainer."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from datamodules import build_datamodule
from lightning_modules import ClassifierModule


def model_seed(study_seed: int, model_cfg: DictConfig) -> int:
    """A second instance of a model differs from the first only in this training seed."""
    return int(study_seed) + 1000 * int(model_cfg.instance)


def datamodule_for(cfg: DictConfig, dev_set: str):
    return build_datamodule({**OmegaConf.to_container(cfg.data, resolve=True), "split": dev_set})


def train_model(cfg: DictConfig, model_cfg: DictConfig) -> tuple[ClassifierModule, float]:
    """Train one zoo model on its development set; returns the module (eval mode) and its val AUC."""
    seed = model_seed(cfg.seed, model_cfg)
    pl.seed_everything(seed, workers=True, verbose=False)
    data = datamodule_for(cfg, model_cfg.dev_set)
    module = ClassifierModule(model_cfg.arch, model_cfg.init, data.task, data.num_outputs, data.channels,
                              lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, accelerator=cfg.trainer.accelerator,
                         devices=cfg.trainer.devices, strategy=cfg.trainer.strategy,
                         precision=cfg.trainer.precision, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, deterministic=True)
    trainer.fit(module, datamodule=data)
    module.eval()
    return module, float(trainer.callback_metrics.get("val_auc", torch.tensor(float("nan"))))
