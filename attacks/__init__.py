"""Adversarial crafting over torchattacks for every task layout, noise baselines, ensembles, sets
crafted as a model's predictions, the adversarial-set cache and score-only
query attacks (`attacks.queries`)."""
from .crafting_batch import RNG_PIECE, CraftingBatch
from .cache import AdversarialSetCache
from .craft import craft, quantize_8bit
from .ensemble import Ensemble, ensemble
from .noise import control_noise
from .prediction import BatchGather, CraftingModule, batch_seed, piece_seed
from .registry import ATTACKS, attack_params

__all__ = ["ATTACKS", "RNG_PIECE", "AdversarialSetCache", "BatchGather", "CraftingBatch", "CraftingModule",
           "Ensemble", "attack_params", "batch_seed", "control_noise", "craft", "ensemble", "piece_seed",
           "quantize_8bit"]
