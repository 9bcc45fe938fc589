"""Attack registry over torchattacks: name -> constructor, parameters with defaults, layout needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torchattacks
from torch import nn

# Common to every attack and handled by `craft`, not by torchattacks.
COMMON_DEFAULTS: dict[str, Any] = {"quantize": False}

KERNELS = ("gaussian", "linear", "uniform")

# One rule per parameter name: (check, requirement shown in the error).
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "eps": (lambda v: 0.0 < v <= 1.0, "in (0, 1] (pixel scale)"),
    "alpha": (lambda v: 0.0 < v <= 1.0, "in (0, 1] (pixel scale)"),
    "steps": (lambda v: v >= 1, ">= 1"),
    "decay": (lambda v: v >= 0.0, ">= 0"),
    "resize_rate": (lambda v: v > 0.0 and v != 1.0, "> 0 and != 1"),
    "diversity_prob": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "len_kernel": (lambda v: v >= 1 and v % 2 == 1, "odd and >= 1"),
    "nsig": (lambda v: v > 0.0, "> 0"),
    "kernel_name": (lambda v: v in KERNELS, f"one of {', '.join(KERNELS)}"),
    "m": (lambda v: v >= 1, ">= 1"),
    "N": (lambda v: v >= 1, ">= 1"),
    "beta": (lambda v: v > 0.0, "> 0"),
}


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its torchattacks class, its parameters with defaults and what it assumes
    about the image layout (`three_channels`: RGB only; `square`: uses the width as the height)."""

    make: Callable[..., torchattacks.attack.Attack]
    defaults: dict[str, Any]
    doc: str
    three_channels: bool = False
    square: bool = False


ITERATIVE = {"eps": 0.01, "alpha": 0.005, "steps": 20}
MOMENTUM = {**ITERATIVE, "decay": 1.0}
DIVERSITY = {"resize_rate": 0.9, "diversity_prob": 0.5, "random_start": False}
VARIANCE = {**MOMENTUM, "N": 5, "beta": 1.5}

ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(torchattacks.FGSM, {"eps": 0.01}, "one step of size eps along the gradient sign"),
    # The paper's iterative FGSM: no random start, sign steps of size alpha, projection onto the
    # eps-ball after each step, clipping to [0, 1]. torchattacks.BIM computes the same steps, but its
    # mask-and-multiply projection costs about 8% of a small model's crafting time; PGD without its
    # random start projects with two clamps (benchmarks/bench_crafting.py compares the two).
    "ifgsm": AttackSpec(lambda model, **p: torchattacks.PGD(model, random_start=False, **p), ITERATIVE,
                        "iterative FGSM (the paper's 'PGD'): no random start"),
    "pgd": AttackSpec(lambda model, **p: torchattacks.PGD(model, random_start=True, **p), ITERATIVE,
                      "iterative FGSM from a uniformly random start in the eps-ball"),
    "mifgsm": AttackSpec(torchattacks.MIFGSM, MOMENTUM, "momentum iterative FGSM"),
    "nifgsm": AttackSpec(torchattacks.NIFGSM, MOMENTUM, "Nesterov-momentum iterative FGSM"),
    "sinifgsm": AttackSpec(torchattacks.SINIFGSM, {**MOMENTUM, "m": 5},
                           "NI-FGSM with gradients averaged over m scaled copies x / 2**i"),
    "vmifgsm": AttackSpec(torchattacks.VMIFGSM, VARIANCE, "MI-FGSM with variance tuning over N neighbours"),
    "vnifgsm": AttackSpec(torchattacks.VNIFGSM, VARIANCE, "NI-FGSM with variance tuning over N neighbours"),
    "difgsm": AttackSpec(torchattacks.DIFGSM, {**ITERATIVE, "decay": 0.0, **DIVERSITY},
                         "iterative FGSM on randomly resized and padded inputs", square=True),
    "tifgsm": AttackSpec(torchattacks.TIFGSM, {**ITERATIVE, "decay": 0.0, "kernel_name": "gaussian",
                                               "len_kernel": 15, "nsig": 3.0, **DIVERSITY},
                         "DI-FGSM with gradients smoothed by a translation kernel",
                         three_channels=True, square=True),
}


def coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """A config value converted to its default's type, or a one-line ValueError."""
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        converted = type(default)(value)
        if isinstance(default, int) and converted != float(value):
            raise ValueError
        return converted
    except (TypeError, ValueError):
        raise ValueError(f"attack {name}: {key}={value!r} must be a {type(default).__name__}") from None


def attack_params(cfg) -> tuple[str, dict[str, Any]]:
    """Validate an attack config (`name` plus parameters) -> (name, complete parameters)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in ATTACKS:
        raise ValueError(f"attack: unknown name {name!r}; valid: {', '.join(sorted(ATTACKS))}")
    defaults = {**ATTACKS[name].defaults, **COMMON_DEFAULTS}
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"attack {name}: unknown parameter {unknown[0]!r}; valid: {', '.join(defaults)}")
    params = {key: coerce(name, key, cfg.get(key, default), default) for key, default in defaults.items()}
    for key, value in params.items():
        check, requirement = CHECKS.get(key, (lambda v: True, ""))
        if not check(value):
            raise ValueError(f"attack {name}: {key}={value!r} must be {requirement}")
    return name, params


def make_attack(model: nn.Module, name: str, params: dict[str, Any]) -> torchattacks.attack.Attack:
    """The torchattacks attack for validated parameters (without the common ones)."""
    return ATTACKS[name].make(model, **{k: v for k, v in params.items() if k not in COMMON_DEFAULTS})
