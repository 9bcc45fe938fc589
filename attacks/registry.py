"""Attack registry over torchattacks: name -> constructor with validated parameters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torchattacks
from torch import nn


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its torchattacks constructor and its parameters with defaults."""

    make: Callable[..., torchattacks.attack.Attack]
    defaults: dict[str, Any]
    doc: str


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec(lambda m, eps: torchattacks.FGSM(m, eps=eps), {"eps": 0.01},
                       "one step of size eps along the sign of the loss gradient"),
    # torchattacks.BIM is the paper's iterative FGSM: no random start, sign steps of size alpha,
    # projection onto the eps-ball after each step, clipping to [0, 1].
    "ifgsm": AttackSpec(lambda m, eps, alpha, steps: torchattacks.BIM(m, eps=eps, alpha=alpha, steps=steps),
                        {"eps": 0.01, "alpha": 0.005, "steps": 20},
                        "iterative FGSM (the paper's 'PGD'): no random start, projected steps"),
}


def attack_params(cfg) -> tuple[str, dict[str, Any]]:
    """Validate an attack config (`name` plus parameters) -> (name, complete parameters)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in ATTACKS:
        raise ValueError(f"attack: unknown name {name!r}; valid: {', '.join(sorted(ATTACKS))}")
    spec = ATTACKS[name]
    unknown = sorted(set(cfg) - set(spec.defaults))
    if unknown:
        raise ValueError(f"attack {name}: unknown parameter {unknown[0]!r}; valid: {', '.join(spec.defaults)}")
    params = {**spec.defaults, **cfg}
    eps = float(params["eps"])
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"attack {name}: eps={eps} must be in (0, 1] (pixel scale)")
    if "steps" in params and int(params["steps"]) < 1:
        raise ValueError(f"attack {name}: steps={params['steps']} must be >= 1")
    if "alpha" in params and float(params["alpha"]) <= 0.0:
        raise ValueError(f"attack {name}: alpha={params['alpha']} must be > 0")
    return name, params


def make_attack(model: nn.Module, cfg) -> torchattacks.attack.Attack:
    name, params = attack_params(cfg)
    return ATTACKS[name].make(model, **params)
