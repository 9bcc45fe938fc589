"""The networks a study attacks and evaluates, obtained as their kind says (`OBTAIN`, keyed by
`ModelKind.obtained`): trained here (behind its input defence, if any), composed of trained
members (an ensemble, surrogates only), or loaded from outside (an external model).

All come out as ordinary modules, so crafting and evaluation need no special case: a defended
model is a `ClassifierModule` whose `model` is `lightning_modules.defences.Defended`; an ensemble
is an `attacks.Ensemble` of its members' modules (loss mode is seen by `attacks.craft`).
"""
from __future__ import annotations

from pathlib import Path

from attacks import Ensemble
from lightning_modules.defences import defended

from ..design.model_kinds import COMPOSED, LOADED, TRAINED
from .contract import study_layout
from .external import load_external
from .training import TrainedModel, train_model


def with_defence(trained: TrainedModel, kind) -> TrainedModel:
    """The trained model behind its kind's defence (as it is when the kind has none)."""
    if not kind.defended:
        return trained
    module = trained.module
    module.model = defended(module.model, kind.entry["defence"])
    return trained._replace(module=module.eval())


def ensemble_of(members: list[TrainedModel], mode: str) -> TrainedModel:
    """An ensemble surrogate: its members' modules as one `attacks.Ensemble` in `mode`; its
    validation AUC is the members' mean and its run id lists the members' runs."""
    module = Ensemble([m.module for m in members], mode).eval()
    return TrainedModel(module, sum(m.val_auc for m in members) / len(members),
                        ",".join(m.run_id for m in members))


def trained(work, job, kind) -> TrainedModel:
    """Its training entry (its undefended twin) trained or read back, behind its defence."""
    return with_defence(train_model(work.scheduler.seeded(job.seed), kind.training_entry(), work.data,
                                    work.spec.facts, work.group, work.store.store), kind)


def composed(work, job, kind) -> TrainedModel:
    """An ensemble of its members, each obtained by `work.model`."""
    return ensemble_of([work.model(m) for m in work.scheduler.members(job)], kind.mode)


def loaded(work, job, kind) -> TrainedModel:
    """An external model loaded (never trained: no validation AUC, no training run); an endpoint's
    answers cached under `output_dir/external_scores`."""
    module = load_external(kind.entry, study_layout(work.cfg, work.data), work.cfg.tracking.uri,
                           Path(work.cfg.output_dir) / "external_scores" / job.key)
    return TrainedModel(module, float("nan"), "")


# How each kind's network is obtained, called with the `StudyWork`, the `ModelJob` and its kind.
OBTAIN = {TRAINED: trained, COMPOSED: composed, LOADED: loaded}
