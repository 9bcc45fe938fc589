"""The caller's process left as it was: what a study changes of its environment and global state
(Lightning's `PL_*` variables, MLflow's settings, the global random generators, PyTorch's
determinism flags) is put back when it ends."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


@contextmanager
def process_kept() -> Iterator[None]:
    """Restore, on the way out (errors included), `os.environ`, the global RNG states of Python,
    NumPy, PyTorch's CPU and (if initialised) CUDA generators, and PyTorch's deterministic-algorithm
    and cuDNN flags."""
    environ = dict(os.environ)
    python, numpy = random.getstate(), np.random.get_state()
    cuda = torch.cuda.device_count() if torch.cuda.is_initialized() else 0
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        with torch.random.fork_rng(devices=range(cuda)):
            yield
    finally:
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update({key: value for key, value in environ.items() if os.environ.get(key) != value})
        random.setstate(python)
        np.random.set_state(numpy)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
