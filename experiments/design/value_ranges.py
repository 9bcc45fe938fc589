"""The range of every numeric config key, and folders that cannot be made, checked when a config is
read (`config.validate`): one line naming the key and value, before any work."""
from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf

SEED_MAX = 2**32 - 1  # the seeds Lightning and numpy accept (Lightning replaces any other by a random one)
NPZ_SIZES = (0, 28, 64, 128, 224)  # MedMNIST+ file sizes (0: the smallest at least image_size)


def _at_least(low: float):
    return lambda v: v >= low, f"must be at least {low:g}"


def _between(low: float, high: float):
    return lambda v: low < v < high, f"must be above {low:g} and below {high:g}"


def _one_of(values: tuple):
    return lambda v: v in values, f"must be one of {', '.join(map(str, values))}"


SEED = (lambda v: 0 <= v <= SEED_MAX, f"must be a whole number from 0 to {SEED_MAX}")

# key -> (check, what the check asks for); `[]` marks every item of a list. An attack's budgets
# (`attacks[].eps[]`, `alpha`) are checked in the attack's norm by `attacks.attack_params`: (0, 1] for
# L-inf, above 0 and finite for L2 (whose budgets exceed 1 on a 32-px image).
RANGES = {
    "data.image_size": _at_least(1), "data.num_patients": _at_least(1), "data.images_per_patient": _at_least(1),
    "data.signal": _at_least(0), "data.test_fraction": _between(0, 1), "data.val_fraction": _between(0, 1),
    "data.seed": SEED, "data.batch_size": _at_least(1), "data.num_workers": _at_least(0),
    "data.npz_size": _one_of(NPZ_SIZES), "data.channels": _one_of((0, 1, 3)),
    "data.ordinal_threshold": _at_least(1), "data.max_pixels": _at_least(1),
    "seed": SEED, "seeds[]": SEED, "bootstrap_resamples": _at_least(0),
    "models[].instance": _at_least(0), "zoo.instances[]": _at_least(0),
    "crafting.batch_size": _at_least(0),
    "train.max_epochs": _at_least(1), "train.patience": _at_least(0),
    "train.lr": (lambda v: 0 < v < math.inf, "must be above 0"), "train.weight_decay": _at_least(0),
    "queries[].eps[]": (lambda v: 0 < v < math.inf, "must be above 0"), "queries[].max_queries": _at_least(1),
    "queries[].budgets[]": _at_least(1),
}


def _values(cfg: DictConfig, key: str) -> list[tuple[str, object]]:
    """(shown key, value) of a key, one per item for keys with `[]`."""
    if "[]" not in key:
        return [(key, OmegaConf.select(cfg, key))]
    head, _, rest = key.partition("[]")
    items = OmegaConf.select(cfg, head) or []
    if not rest:
        return [(f"{head}[{i}]", item) for i, item in enumerate(items)]
    return [(f"{head}[{i}].{shown}", value) for i, item in enumerate(items)
            for shown, value in _values(item, rest.lstrip("."))]


def range_problem(cfg: DictConfig) -> str | None:
    """The first numeric key outside its range, or a device count Lightning would refuse, as one line."""
    for key, (check, wanted) in RANGES.items():
        for shown, value in _values(cfg, key):
            if not check(value):  # NaN fails every check
                return f"{shown}: {value}; {wanted}"
    devices = cfg.trainer.devices
    listed = OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else None
    if listed is not None:
        if not listed or not all(isinstance(d, int) and d >= 0 for d in listed):
            return f"trainer.devices: {listed}; a list must hold device indices (0, 1, ...)"
    elif str(devices) not in ("auto", "-1") and not (str(devices).isdigit() and int(devices) >= 1):
        return f"trainer.devices: {devices}; must be a count of at least 1, -1, auto or a list of indices"
    return None
