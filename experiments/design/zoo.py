"""The model zoo and the surrogate->target pairs a study evaluates.

A zoo entry is a trained model (`arch`, `init`, `dev_set`, `instance`, optional
`adversarial_training`), optionally behind an input `defence`, or an `ensemble` of other entries
(surrogates only). An ensemble entry holds its members' entries (`members`) and takes `arch`, `init`
and `dev_set` from them (the common value, or `mixed`). An `external` entry (`design.external`) is a
model trained elsewhere: its settings complete, `arch` and `dev_set` are `external`, `init` its format.
Each entry is one kind of model (`design.model_kinds`), which makes the entry and answers for it.
"""
from __future__ import annotations

from itertools import product

from omegaconf import DictConfig, OmegaConf

from .model_kinds import COMPOSED, TRAINED, kind_class, kind_of

PAIR_MODES = ("all", "whitebox", "transfer")


def model_name(arch: str, init: str, dev_set: str, instance: int) -> str:
    """Readable, unique name of a factor-list zoo entry, e.g. `tiny_cnn-random-d2_2-v0`."""
    return f"{arch}-{init}-{dev_set.replace('/', '_')}-v{instance}"


MIXED = "mixed"


def expand_zoo(cfg: DictConfig) -> list[dict]:
    """Explicit `models` entries followed by the cross product of the `zoo` factor lists; ensembles
    resolved (ValueError naming an unknown member)."""
    models = [_entry(OmegaConf.to_container(m, resolve=True)) for m in cfg.models]
    factors = cfg.zoo
    if factors.archs:
        for arch, init, dev_set, instance in product(factors.archs, factors.inits, factors.dev_sets,
                                                     factors.instances):
            models.append({"name": model_name(arch, init, dev_set, instance), "arch": arch, "init": init,
                           "dev_set": dev_set, "instance": int(instance)})
    by_name = {m["name"]: m for m in models}
    for model in models:
        if kind_of(model).obtained == COMPOSED:
            _resolve(model, by_name)
    return models


def _entry(model: dict) -> dict:
    """A zoo entry of a `models` item, as its kind makes it (`ModelKind.entry_of`)."""
    return kind_class(model).entry_of(model)


def _resolve(model: dict, by_name: dict) -> None:
    where = f"models.{model['name']}.ensemble"
    members = []
    for name in kind_of(model).member_names:
        if name not in by_name:
            raise ValueError(f"{where}: unknown member {name!r}; valid: {', '.join(by_name)}")
        member = kind_of(by_name[name])
        if member.obtained != TRAINED or name == model["name"]:
            raise ValueError(f"{where}: member {name!r} is {member.noun} (members are trained models)")
        members.append(by_name[name])
    model["members"] = members
    for factor in ("arch", "init", "dev_set"):
        values = {m[factor] for m in members}
        model[factor] = values.pop() if len(values) == 1 else MIXED


def training_twins(first, second) -> bool:
    """Whether two entries are one trained model (equal but for their defences; never ensembles)."""
    trained = kind_of(first).training_identity()
    return trained is not None and trained == kind_of(second).training_identity()


def hardening(entry) -> str:
    """What hardens a model (`ModelKind.hardening`), e.g. `jpeg(quality=50)` or `none`."""
    return kind_of(entry).hardening()


def entry_params(entry) -> dict:
    """A zoo entry as flat MLflow params (`ModelKind.params`): `defence.quality`,
    `adversarial_training.eps`, ...; an ensemble names its members (`ensemble`: comma-separated) and `mode`."""
    return kind_of(entry).params()


def study_pairs(cfg: DictConfig, zoo: list) -> list[tuple[str, str]]:
    """The (surrogate, target) pairs of a study on its expanded `zoo`: `select_pairs`, where no
    targets means every kind that may be a target and no surrogates every `default_surrogate` kind."""
    kinds = [kind_of(m) for m in zoo]
    return select_pairs([k.name for k in kinds], list(cfg.surrogates), list(cfg.targets), cfg.pairs,
                        list(cfg.designs), [k.name for k in kinds if k.target],
                        [k.name for k in kinds if k.default_surrogate])


def select_pairs(names: list[str], surrogates: list[str], targets: list[str], mode: str,
                 designs: list | None = None, target_names: list[str] | None = None,
                 surrogate_names: list[str] | None = None) -> list[tuple[str, str]]:
    """(surrogate, target) pairs: the union of each design's surrogates x targets when designs are
    given, else every surrogate x every target (empty lists mean `surrogate_names`, or
    `target_names` for targets, both by default the whole zoo); then filtered by `mode`: all,
    whitebox (surrogate = target) or transfer (surrogate != target)."""
    if mode not in PAIR_MODES:  # never all pairs for a mode misspelt
        raise ValueError(f"pairs: unknown {mode!r}; valid: {', '.join(PAIR_MODES)}")
    blocks = [(d["surrogates"], d["targets"]) for d in designs] if designs else [(surrogates, targets)]
    target_names = names if target_names is None else target_names
    surrogate_names = names if surrogate_names is None else surrogate_names
    pairs = list(dict.fromkeys((s, t) for ss, ts in blocks for s in (ss or surrogate_names)
                               for t in (ts or target_names)))
    if mode == "whitebox":
        return [(s, t) for s, t in pairs if s == t]
    if mode == "transfer":
        return [(s, t) for s, t in pairs if s != t]
    return pairs
