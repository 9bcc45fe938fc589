"""Adversarial crafting over torchattacks for every task layout, plus same-size noise baselines."""
from .craft import craft
from .noise import control_noise
from .registry import ATTACKS, attack_params

__all__ = ["ATTACKS", "attack_params", "control_noise", "craft"]
