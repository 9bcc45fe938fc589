"""On-disk cache of adversarial sets: each (surrogate, attack config, split) is crafted once."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from .registry import attack_params

AdversarialSet = tuple[torch.Tensor, torch.Tensor]


def set_key(surrogate_hash: str, attack_cfg, split: str, seed: int) -> str:
    """Hex digest naming one adversarial set: the surrogate's hash, the complete validated attack
    parameters (defaults filled in), the data split and the seed of the random parts."""
    name, params = attack_params(attack_cfg)
    identity = {"surrogate": surrogate_hash, "attack": {"name": name, **params}, "split": split, "seed": seed}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class AdversarialSetCache:
    """Adversarial images and their control noise, one file per key under `root`.

    Files are written once (a temporary file renamed into place, so readers never see a partial
    file) and hold float tensors as crafted (lossless). A lock per key makes concurrent processes
    wait for the one that crafts instead of crafting the same set again.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not key or not key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"adversarial-set cache: key {key!r} must be letters, digits, '-' or '_'")
        return self.root / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str) -> AdversarialSet:
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"adversarial-set cache: no set {path}")
        stored = torch.load(path, map_location="cpu", weights_only=True)
        return stored["adversarial"], stored["control"]

    def load_or_craft(self, key: str, craft_fn: Callable[[], AdversarialSet]) -> AdversarialSet:
        """The set stored under `key`; crafted by `craft_fn() -> (adversarial, control)` and stored
        first if no process has done so yet."""
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                adversarial, control = craft_fn()
                self.save(path, adversarial, control)
        return self.load(key)

    @staticmethod
    def save(path: Path, adversarial: torch.Tensor, control: torch.Tensor) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save({"adversarial": adversarial.detach().cpu().contiguous(),
                            "control": control.detach().cpu().contiguous()}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
