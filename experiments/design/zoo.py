"""The model zoo and the surrogate->target pairs a study evaluates.

A zoo entry is a trained model (`arch`, `init`, `dev_set`, `instance`, optional
`adversarial_training`), optionally behind an input `defence`, or an `ensemble` of other entries
(surrogates only). An ensemble entry holds its members' entries (`members`) and takes `arch`, `init`
and `dev_set` from them (the common value, or `mixed`). An `external` entry (`design.external`) is a
model trained elsewhere: its settings complete, `arch` and `dev_set` are `external`, `init` its format.
"""
from __future__ import annotations

from itertools import product

from omegaconf import DictConfig, OmegaConf

from .external import DIFFERENTIABLE, external_settings, is_external

PAIR_MODES = ("all", "whitebox", "transfer")


def model_name(arch: str, init: str, dev_set: str, instance: int) -> str:
    """Readable, unique name of a factor-list zoo entry, e.g. `tiny_cnn-random-d2_2-v0`."""
    return f"{arch}-{init}-{dev_set.replace('/', '_')}-v{instance}"


OPTIONAL = ("defence", "adversarial_training")  # left out of an entry when not set
MIXED = "mixed"
EXTERNAL = "external"


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
        if "ensemble" in model:
            _resolve(model, by_name)
    return models


def _entry(model: dict) -> dict:
    """A zoo entry without its unset optional keys (a plain entry has exactly the factor keys)."""
    if model.get("external"):
        return _external_entry(model)
    model.pop("external", None)
    entry = {k: v for k, v in model.items() if k not in (*OPTIONAL, "ensemble", "mode") or v}
    if not model.get("ensemble"):
        entry.pop("mode", None)
    else:
        for key in OPTIONAL:
            if model.get(key):
                raise ValueError(f"models.{model['name']}.{key}: an ensemble takes none (give it to its members)")
        for key in ("arch", "init", "dev_set", "instance"):
            entry.pop(key, None)
    return entry


def _external_entry(model: dict) -> dict:
    """An external entry: its complete settings; training keys and hardening are refused."""
    for key in (*OPTIONAL, "ensemble"):
        if model.get(key):
            raise ValueError(f"models.{model['name']}.{key}: an external model takes none (it is not trained here)")
    settings = external_settings(model["name"], model["external"])
    return {"name": model["name"], "arch": EXTERNAL, "init": settings["format"], "dev_set": EXTERNAL,
            "external": settings}


def _resolve(model: dict, by_name: dict) -> None:
    where = f"models.{model['name']}.ensemble"
    members = []
    for name in model["ensemble"]:
        if name not in by_name:
            raise ValueError(f"{where}: unknown member {name!r}; valid: {', '.join(by_name)}")
        if "ensemble" in by_name[name] or name == model["name"]:
            raise ValueError(f"{where}: member {name!r} is an ensemble (members are trained models)")
        if is_external(by_name[name]):
            raise ValueError(f"{where}: member {name!r} is an external model (members are trained models)")
        members.append(by_name[name])
    model["members"] = members
    for factor in ("arch", "init", "dev_set"):
        values = {m[factor] for m in members}
        model[factor] = values.pop() if len(values) == 1 else MIXED


def is_ensemble(entry) -> bool:
    return bool(entry.get("ensemble"))


def training_twins(first, second) -> bool:
    """Whether two entries are one trained model (equal but for their defences; never ensembles)."""
    def trained(entry):
        return {k: v for k, v in entry.items() if k not in ("name", "defence")}
    return (not is_ensemble(first) and not is_ensemble(second) and not is_external(first)
            and trained(first) == trained(second))


def default_surrogate(entry) -> bool:
    """Whether an entry is a surrogate when `surrogates` is empty: trained models, ensembles and
    externals of a differentiable format (other externals only when named, and checked then)."""
    return not is_external(entry) or entry["external"]["format"] in DIFFERENTIABLE


def hardening(entry) -> str:
    """What hardens a model, e.g. `jpeg(quality=50)`, `pgd(eps=0.03,alpha=0.01,steps=5)`, both joined
    by ` + `, or `none`."""
    parts = []
    for key in ("adversarial_training", "defence"):
        if entry.get(key):
            settings = dict(entry[key])
            name = settings.pop("name")
            values = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()]
            parts.append(f"{name}({','.join(values)})")
    return " + ".join(parts) or "none"


def entry_params(entry) -> dict:
    """A zoo entry as flat MLflow params: `defence.quality`, `adversarial_training.eps`, ...; an
    ensemble names its members (`ensemble`: comma-separated) and `mode`."""
    params = {}
    for key, value in entry.items():
        if key == "members":
            continue
        if key == "ensemble":
            params[key] = ",".join(value)
        elif hasattr(value, "items"):
            params.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            params[key] = value
    return params


def study_pairs(cfg: DictConfig, zoo: list) -> list[tuple[str, str]]:
    """The (surrogate, target) pairs of a study on its expanded `zoo`: `select_pairs`, where no
    targets means every model but the ensembles and no surrogates every `default_surrogate`."""
    return select_pairs([m["name"] for m in zoo], list(cfg.surrogates), list(cfg.targets), cfg.pairs,
                        list(cfg.designs), [m["name"] for m in zoo if not is_ensemble(m)],
                        [m["name"] for m in zoo if default_surrogate(m)])


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
