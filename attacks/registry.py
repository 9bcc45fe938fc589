"""Attack registry over torchattacks: name -> constructor, parameters with defaults, layout needs,
the norms each attack has and the attacker's target (`target`, `norm`: see `threat`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torchattacks
from torch import nn

from lightning_modules.settings import Rule, named_settings

# Common to every attack and handled by `craft`, not by torchattacks.
COMMON_DEFAULTS: dict[str, Any] = {"quantize": False}
# The attacker's goal and budget norm: a setting names them only when they differ from these, so the
# settings (and identities) of untargeted L-inf attacks stay as they were before these keys existed.
THREAT_DEFAULTS: dict[str, str] = {"target": "untargeted", "norm": "linf"}
TARGET_MODES = ("untargeted", "least_likely", "random")  # or a class / finding: its index or name
NORMS = ("linf", "l2")

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
# An L2 budget is the Euclidean length of the whole perturbation: above 1 is usual (a 3 x 32 x 32
# image in [0, 1] spans up to sqrt(3072) = 55.4).
L2_CHECKS: dict[str, Rule] = {
    **CHECKS,
    "eps": (lambda v: 0.0 < v < math.inf, "above 0 and finite (L2 norm of the perturbation)"),
    "alpha": (lambda v: 0.0 < v < math.inf, "above 0 and finite (L2 length of a step)"),
}


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its torchattacks class, its parameters with defaults and what it assumes
    about the image layout (`three_channels`: RGB only; `square`: uses the width as the height) and
    whether a call draws random numbers (`draws`: crafted in fixed pieces, see attacks/crafting_batch.py).
    `l2`: its L2 counterpart's constructor (same parameters, budgets in L2), None when it has none."""

    make: Callable[..., torchattacks.attack.Attack]
    defaults: dict[str, Any]
    doc: str
    three_channels: bool = False
    square: bool = False
    draws: bool = False
    l2: Callable[..., torchattacks.attack.Attack] | None = None

    @property
    def norms(self) -> tuple[str, ...]:
        return NORMS if self.l2 else NORMS[:1]


ITERATIVE = {"eps": 0.01, "alpha": 0.005, "steps": 20}
MOMENTUM = {**ITERATIVE, "decay": 1.0}
DIVERSITY = {"resize_rate": 0.9, "diversity_prob": 0.5, "random_start": False}
VARIANCE = {**MOMENTUM, "N": 5, "beta": 1.5}

ATTACKS: dict[str, AttackSpec] = {
    # L2: the fast gradient method, one step of L2 length eps along the gradient (PGDL2 with one step
    # of size eps from the clean image: its projection onto the eps-ball changes nothing).
    "fgsm": AttackSpec(torchattacks.FGSM, {"eps": 0.01}, "one step of size eps along the gradient sign",
                       l2=lambda model, eps: torchattacks.PGDL2(model, eps=eps, alpha=eps, steps=1,
                                                                 random_start=False)),
    # The paper's iterative FGSM: no random start, sign steps of size alpha, projection onto the
    # eps-ball after each step, clipping to [0, 1]. torchattacks.BIM computes the same steps, but its
    # mask-and-multiply projection costs about 8% of a small model's crafting time; PGD without its
    # random start projects with two clamps (benchmarks/bench_crafting.py compares the two).
    # L2 (ifgsm, pgd): steps of L2 length alpha along the L2-normalised gradient, projected onto the
    # L2 eps-ball (torchattacks.PGDL2; pgd's random start is a random direction at a uniform radius).
    "ifgsm": AttackSpec(lambda model, **p: torchattacks.PGD(model, random_start=False, **p), ITERATIVE,
                        "iterative FGSM (the paper's 'PGD'): no random start",
                        l2=lambda model, **p: torchattacks.PGDL2(model, random_start=False, **p)),
    "pgd": AttackSpec(lambda model, **p: torchattacks.PGD(model, random_start=True, **p), ITERATIVE,
                      "iterative FGSM from a uniformly random start in the eps-ball", draws=True,
                      l2=lambda model, **p: torchattacks.PGDL2(model, random_start=True, **p)),
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


ATTACK_DEFAULTS = {name: {**spec.defaults, **COMMON_DEFAULTS} for name, spec in sorted(ATTACKS.items())}


def attack_params(cfg) -> tuple[str, dict[str, Any]]:
    """Validate an attack config (`name`, parameters, optionally `target` and `norm`) -> (name, complete
    parameters, with `target` and `norm` only where they are not the defaults). Budgets (`eps`,
    `alpha`) are checked in the setting's norm."""
    cfg = dict(cfg)
    chosen = {key: cfg.pop(key, default) for key, default in THREAT_DEFAULTS.items()}
    check_norm(cfg.get("name"), chosen["norm"])
    name, params = named_settings("attack", cfg, ATTACK_DEFAULTS, L2_CHECKS if chosen["norm"] == "l2" else CHECKS)
    check_target(name, chosen["target"])
    return name, {**params, **{key: value for key, value in chosen.items() if value != THREAT_DEFAULTS[key]}}


def check_norm(name, norm) -> None:
    """ValueError (one line) unless `norm` is one the attack `name` has (an unknown name is left to
    `attack_params`)."""
    if name in ATTACKS and norm not in ATTACKS[name].norms:
        raise ValueError(f"attack {name}: norm={norm!r} must be one of {', '.join(ATTACKS[name].norms)} "
                         f"(the norms {name} has)")


def check_target(name: str, target) -> None:
    """ValueError (one line) unless `target` is a mode, a class index or a class name that the attack
    `name` can aim at (every registered attack has torchattacks' targeted mode)."""
    if isinstance(target, bool) or not isinstance(target, (str, int)) or str(target).lstrip("-").isdigit() \
            and int(target) < 0 or target == "":
        raise ValueError(f"attack {name}: target={target!r} must be untargeted, {', '.join(TARGET_MODES[1:])}, "
                         "a class index or a class name")


def threat(params: dict[str, Any]) -> tuple[str | int, str]:
    """A validated setting's (target, norm): the defaults where it does not name them."""
    return params.get("target", THREAT_DEFAULTS["target"]), params.get("norm", THREAT_DEFAULTS["norm"])


def make_attack(model: nn.Module, name: str, params: dict[str, Any]) -> torchattacks.attack.Attack:
    """The torchattacks attack for validated parameters (without the common and threat ones), in the
    setting's norm."""
    spec, (_, norm) = ATTACKS[name], threat(params)
    make = spec.l2 if norm == "l2" else spec.make
    return make(model, **{k: v for k, v in params.items() if k not in {**COMMON_DEFAULTS, **THREAT_DEFAULTS}})
