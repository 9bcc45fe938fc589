"""The model zoo and the surrogate->target pairs a study evaluates."""
from __future__ import annotations

from itertools import product

from omegaconf import DictConfig, OmegaConf

PAIR_MODES = ("all", "whitebox", "transfer")


def model_name(arch: str, init: str, dev_set: str, instance: int) -> str:
    """Readable, unique name of a factor-list zoo entry, e.g. `tiny_cnn-random-d2_2-v0`."""
    return f"{arch}-{init}-{dev_set.replace('/', '_')}-v{instance}"


def expand_zoo(cfg: DictConfig) -> list[dict]:
    """Explicit `models` entries followed by the cross product of the `zoo` factor lists."""
    models = [OmegaConf.to_container(m, resolve=True) for m in cfg.models]
    factors = cfg.zoo
    if factors.archs:
        for arch, init, dev_set, instance in product(factors.archs, factors.inits, factors.dev_sets,
                                                     factors.instances):
            models.append({"name": model_name(arch, init, dev_set, instance), "arch": arch, "init": init,
                           "dev_set": dev_set, "instance": int(instance)})
    return models


def select_pairs(names: list[str], surrogates: list[str], targets: list[str], mode: str,
                 designs: list | None = None) -> list[tuple[str, str]]:
    """(surrogate, target) pairs: the union of each design's surrogates x targets when designs are
    given, else every surrogate x every target (empty lists mean the whole zoo); then filtered by
    `mode`: all, whitebox (surrogate = target) or transfer (surrogate != target)."""
    blocks = [(d["surrogates"], d["targets"]) for d in designs] if designs else [(surrogates, targets)]
    pairs = list(dict.fromkeys((s, t) for ss, ts in blocks for s in (ss or names) for t in (ts or names)))
    if mode == "whitebox":
        return [(s, t) for s, t in pairs if s == t]
    if mode == "transfer":
        return [(s, t) for s, t in pairs if s != t]
    return pairs
