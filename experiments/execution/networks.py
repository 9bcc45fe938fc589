"""The networks a study attacks and evaluates, built from trained zoo models: a model behind its input
defence, or an ensemble of trained models (surrogates only).

Both come out as ordinary modules, so crafting and evaluation need no special case: a defended
model is a `ClassifierModule` whose `model` is `lightning_modules.defences.Defended`; an ensemble
is an `attacks.Ensemble` of its members' modules (loss mode is seen by `attacks.craft`).
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from attacks import Ensemble
from lightning_modules.defences import defended

from .training import TrainedModel


def training_entry(entry) -> DictConfig:
    """The zoo entry a model is trained as: without its `defence` (its undefended twin)."""
    return OmegaConf.create({k: v for k, v in entry.items() if k != "defence"})


def with_defence(trained: TrainedModel, entry) -> TrainedModel:
    """The trained model behind the entry's defence (as it is when the entry has none)."""
    if not entry.get("defence"):
        return trained
    module = trained.module
    module.model = defended(module.model, entry["defence"])
    return trained._replace(module=module.eval())


def ensemble_of(members: list[TrainedModel], entry) -> TrainedModel:
    """An ensemble surrogate: its members' modules as one `attacks.Ensemble` in the entry's mode;
    its validation AUC is the members' mean and its run id lists the members' runs."""
    module = Ensemble([m.module for m in members], entry["mode"]).eval()
    return TrainedModel(module, sum(m.val_auc for m in members) / len(members),
                        ",".join(m.run_id for m in members))
