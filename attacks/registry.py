"""Attack registry over torchattacks: name -> constructor, parameters with defaults, layout needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torchattacks
from torch import nn

from lightning_modules.settings import Rule, named_settings

# Common to every attack and handled by `craft`, not by torchattacks.
COMMON_DEFAULTS: dict[str, Any] = {"quantize": False}

KERNELS = ("gaussian", "linear", "uniform")

# One rule per parameter name: (check, requirement shown in the error).
CHECKS: dict[str, Rule] = {
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
    about the image layout (`three_channels`: RGB only; `square`: uses the width as the height) and
    whether a call draws random numbers (`draws`: crafted in fixed pieces, see attacks/batching.py)."""

    make: Callable[..., torchattacks.attack.Attack]
    defaults: dict[str, Any]
    doc: str
    three_channels: bool = False
    square: bool = False
    draws: bool = False


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
                      "iterative FGSM from a uniformly random start in the eps-ball", draws=True),
    "mifgsm": AttackSpec(torchattacks.MIFGSM, MOMENTUM, "momentum iterative FGSM"),
    "nifgsm": AttackSpec(torchattacks.NIFGSM, MOMENTUM, "Nesterov-momentum iterative FGSM"),
    "sinifgsm": AttackSpec(torchattacks.SINIFGSM, {**MOMENTUM, "m": 5},
                           "NI-FGSM with gradients averaged over m scaled copies x / 2**i"),
    "vmifgsm": AttackSpec(torchattacks.VMIFGSM, VARIANCE, "MI-FGSM with variance tuning over N neighbours",
                           draws=True),
    "vnifgsm": AttackSpec(torchattacks.VNIFGSM, VARIANCE, "NI-FGSM with variance tuning over N neighbours",
                           draws=True),
    "difgsm": AttackSpec(torchattacks.DIFGSM, {**ITERATIVE, "decay": 0.0, **DIVERSITY},
                         "iterative FGSM on randomly resized and padded inputs", square=True, draws=True),
    "tifgsm": AttackSpec(torchattacks.TIFGSM, {**ITERATIVE, "decay": 0.0, "kernel_name": "gaussian",
                                               "len_kernel": 15, "nsig": 3.0, **DIVERSITY},
                         "DI-FGSM with gradients smoothed by a translation kernel",
                         three_channels=True, square=True, draws=True),
}


DEFAULTS = {name: {**spec.defaults, **COMMON_DEFAULTS} for name, spec in sorted(ATTACKS.items())}


def attack_params(cfg) -> tuple[str, dict[str, Any]]:
    """Validate an attack config (`name` plus parameters) -> (name, complete parameters)."""
    return named_settings("attack", cfg, DEFAULTS, CHECKS)


def make_attack(model: nn.Module, name: str, params: dict[str, Any]) -> torchattacks.attack.Attack:
    """The torchattacks attack for validated parameters (without the common ones)."""
    return ATTACKS[name].make(model, **{k: v for k, v in params.items() if k not in COMMON_DEFAULTS})
