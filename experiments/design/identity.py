"""What makes two pieces of work the same: one identity per kind of work, one hash function.

Each kind of work (a trained model, an adversarial set, a pair evaluation, a study) is named by a
digest of the config keys that change its result and of the code version. Speed options (where and
how fast the work runs) and locations (where results go) are never part of an identity, so
changing them reuses every finished run and set. docs/architecture.md lists the keys.
"""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from attacks import attack_params
from datamodules.fingerprint import sha256_file
from datamodules.sources import SOURCE_SPECS

from .external import external_source
from .facts import StudyFacts

# Config keys that change how fast or where work runs, never what it computes.
SPEED_OPTIONS = {
    "data": ("num_workers", "pin_memory", "cache_dir"),
    "crafting": ("batch_size", "auto_batch", "device"),
    "trainer": ("accelerator",),
}
# Where results go: never part of any identity.
LOCATIONS = ("tracking", "output_dir")
# Which executor does the work and where its tasks run: never part of any identity.
EXECUTION = ("executor", "ray")
# The study keys a trained model depends on (with its zoo entry, its seed and the data identity).
MODEL_SECTIONS = ("train", "trainer")
# The study keys a pair evaluation depends on besides its set and its target.
PAIR_CONFIG_KEYS = ("bootstrap_resamples",)


def digest(payload) -> str:
    """The one hash of medtransfer: a stable short hex digest of a JSON-able description."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _section(cfg: DictConfig, name: str) -> dict:
    """A config section as a plain dict, its speed options left out."""
    values = OmegaConf.to_container(cfg[name], resolve=True)
    return {k: v for k, v in values.items() if k not in SPEED_OPTIONS.get(name, ())}


def data_settings(cfg: DictConfig) -> dict:
    """The `data` section as plain values, loader and cache options left out."""
    return _section(cfg, "data")


def data_identity(cfg: DictConfig, facts: StudyFacts) -> dict:
    """The `data` keys that decide the images, labels and splits (loader and cache options left out).
    Files count by their content, never their location, so data edited in place makes new work and
    moved data reuses the old: split files (`data.splits`) as `facts.splits`, `sha256:<hex>` of the file
    or the authors' folder; a real source's `root` as `content`, `facts.content` (the root itself
    while the data cannot be read). Synthetic data is named by its generator's keys."""
    values = data_settings(cfg)
    if facts.data != digest(values):
        raise ValueError("study facts of other data settings: find them for this config (preflight.facts)")
    if values.get("splits"):
        values["splits"] = facts.splits
    if values["source"] in SOURCE_SPECS and SOURCE_SPECS[values["source"]].real and facts.content:
        values.pop("root", None)
        values["content"] = facts.content
    return values


def attack_grid(cfg: DictConfig) -> list[dict]:
    """Each (attack, eps) of the config as a complete, validated parameter dict with `name` (defaults
    filled in, so a setting is named the same however it is spelled; `target` and `norm` only where
    they are not untargeted and linf, so the settings of earlier configs keep their identities)."""
    settings = []
    for attack in cfg.attacks:
        for eps in attack.eps:
            name, params = attack_params({"name": attack.name, **attack.params, "eps": float(eps),
                                          "target": attack.get("target", "untargeted"),
                                          "norm": attack.get("norm", "linf")})
            settings.append({"name": name, **params})
    return settings


def model_seed(study_seed: int, model_cfg) -> int:
    """The training seed (initial weights of every randomly initialised layer, data order) of a zoo
    model: a hash of its whole training identity (architecture, init, development set, instance,
    adversarial training when set) and the study seed. Two models differing in any of these start
    from independent random weights; what they share is only what their `init` loads (ImageNet
    weights or a `checkpoint:` file). A `defence` is not part of it: a defended model is its
    undefended twin's trained model."""
    identity = {"arch": model_cfg["arch"], "init": model_cfg["init"], "dev_set": model_cfg["dev_set"],
                "instance": int(model_cfg["instance"]), "study_seed": int(study_seed)}
    adversarial = adversarial_training(model_cfg)
    if adversarial is not None:
        identity["adversarial_training"] = adversarial
    return int(digest(identity), 16) % 2**31


def adversarial_training(model_cfg) -> dict | None:
    """A zoo entry's adversarial-training attack as complete parameters with `name`, or None."""
    setting = model_cfg.get("adversarial_training")
    if not setting:
        return None
    name, params = attack_params(setting)
    return {"name": name, **params}


def _init_file(init: str) -> str | None:
    """A `checkpoint:` init's file content digest (the weights it loads, wherever the file lies)."""
    if not init.startswith("checkpoint:"):
        return None
    path = Path(init.removeprefix("checkpoint:")).expanduser()
    if not path.is_file():
        return None
    stat = path.stat()
    return _sha256_file_at(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@cache
def _sha256_file_at(path: str, mtime_ns: int, size: int) -> str:
    """Content digest of a file, read once per version of it (path, modification time, size)."""
    return sha256_file(Path(path))[:16]


def model_identity(cfg: DictConfig, model_cfg, facts: StudyFacts) -> dict:
    """Everything that decides what a trained model is (logged as the model run's params); never the
    entry's `defence` (a defended model reuses its twin's training run)."""
    if model_cfg.get("ensemble"):
        raise ValueError(f"model {model_cfg['name']}: an ensemble is not trained (it has no model identity)")
    identity = {"arch": model_cfg["arch"], "init": model_cfg["init"], "dev_set": model_cfg["dev_set"],
                "instance": int(model_cfg["instance"]), "seed": model_seed(cfg.seed, model_cfg),
                "data": data_identity(cfg, facts), **{name: _section(cfg, name) for name in MODEL_SECTIONS}}
    weights = _init_file(str(model_cfg["init"]))
    if weights is not None:
        identity["init_sha256"] = weights
    adversarial = adversarial_training(model_cfg)
    if adversarial is not None:
        identity["adversarial_training"] = adversarial
    return identity


def model_key(cfg: DictConfig, model_cfg, facts: StudyFacts) -> str:
    """Identity of a trained model: `model_identity` and the code version."""
    return digest({"code": facts.code, **model_identity(cfg, model_cfg, facts)})


def external_key(entry, facts: StudyFacts) -> str:
    """Identity of an external model: its declared format, location and contract, and its
    `fingerprint` (set by the run: its file's sha256 or its registry version's source, and the
    digest of its scores on the fixed probe batch), so a changed model behind the same path, URI
    or endpoint is a new network; and the code version (which feeds it through its contract)."""
    settings = entry["external"]
    return digest({"external": external_source(settings), "fingerprint": settings["fingerprint"], "code": facts.code})


def set_key(surrogate_network: str, setting: dict, seed: int, precision: str, channels_last: bool) -> str:
    """Identity of an adversarial test set: its surrogate network (`network_key` at the set's seed,
    whose identity holds the data), the complete attack setting (`attack_grid`), the seed of its
    random parts, and the crafting options that change its bits: the precision and the memory
    layout (channels-last convolutions round differently)."""
    return digest({"surrogate": surrogate_network, "attack": setting, "seed": int(seed),
                   "precision": precision, "channels_last": bool(channels_last)})


def pair_key(cfg: DictConfig, set_key_: str, target_network: str) -> str:
    """Identity of a pair evaluation: the adversarial set (`set_key`), the target network
    (`network_key` at the set's seed) and the study's evaluation keys."""
    return digest({"set": set_key_, "target": target_network, **{key: cfg[key] for key in PAIR_CONFIG_KEYS}})


def query_key(cfg: DictConfig, target_network: str, start: str, setting: dict, facts: StudyFacts) -> str:
    """Identity of a query attack on one target: the target network, the start (`clean` or the start
    set's `set_key`), the complete query setting without its other starts (name, norm, eps,
    max_queries, budgets), the seed of its random draws, the test data and the code version."""
    attack = {k: v for k, v in setting.items() if k != "starts"}
    return digest({"target": target_network, "start": start, "attack": attack, "seed": int(cfg.seed),
                   "data": data_identity(cfg, facts), "code": facts.code})


def study_key(cfg: DictConfig, facts: StudyFacts) -> str:
    """Identity of a study (its parent run): the resolved config without speed options, locations
    and execution keys, its attacks as `attack_grid` names them, and the code version."""
    resolved = {name: _section(cfg, name) if name in SPEED_OPTIONS else value
                for name, value in OmegaConf.to_container(cfg, resolve=True).items()
                if name not in LOCATIONS + EXECUTION}
    resolved["data"] = data_identity(cfg, facts)
    resolved["attacks"] = attack_grid(cfg)
    if not resolved.get("queries"):  # a study without query attacks keeps the identity it had before them
        resolved.pop("queries", None)
    return digest({"config": resolved, "code": facts.code})
