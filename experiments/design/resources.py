"""What a study's config asks of the machine: how many devices and processes its trainer uses."""
from __future__ import annotations

import torch
from omegaconf import DictConfig

MULTI_PROCESS_STRATEGIES = ("auto", "ddp")


def device_count(devices, available: int) -> int:
    """How many devices a Lightning `devices` value asks for (an int, "auto", -1 or a list of ids)."""
    text = str(devices)
    if text in ("auto", "-1"):
        return available
    return int(text) if text.isdigit() else len(devices)


def uses_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def world_size(cfg: DictConfig) -> int:
    """How many processes the study's trainer asks for: one per device."""
    accelerator = str(cfg.trainer.accelerator)
    available = torch.cuda.device_count() if uses_cuda(accelerator) else 1
    return max(1, device_count(cfg.trainer.devices, available))


def backend(cfg: DictConfig) -> str:
    return "nccl" if uses_cuda(str(cfg.trainer.accelerator)) else "gloo"
