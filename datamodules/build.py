"""`build_datamodule(cfg)`: domain x source x development set -> LightningDataModule."""
from __future__ import annotations

from functools import lru_cache

import torch

from .base import ImageArrayDataModule
from .splits import TEST_FRACTION, VAL_FRACTION, split_manifest
from .synthetic.pathology import generate_pathology

DOMAINS = ("pathology",)
SOURCES = ("synthetic",)


@lru_cache(maxsize=4)
def _synthetic_pathology(num_patients: int, patches_per_patient: int, image_size: int, seed: int,
                         signal: float):
    return generate_pathology(num_patients, patches_per_patient, image_size, seed, signal=signal)


def build_datamodule(cfg) -> ImageArrayDataModule:
    """`cfg` keys: domain, source, split (d1, d2, d2/2, d1/10), image_size, num_patients,
    images_per_patient, seed, batch_size, num_workers, and optional test_fraction, val_fraction, signal."""
    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    domain, source = get("domain"), get("source")
    if domain not in DOMAINS:
        raise ValueError(f"data.domain: unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if source not in SOURCES:
        raise ValueError(f"data.source: unknown source {source!r}; valid: {', '.join(SOURCES)}")
    images, labels, patients = _synthetic_pathology(
        int(get("num_patients")), int(get("images_per_patient")), int(get("image_size")), int(get("seed")),
        float(get("signal", 1.0)))
    manifest = split_manifest(patients, int(get("seed")), float(get("test_fraction", TEST_FRACTION)),
                              float(get("val_fraction", VAL_FRACTION)))
    return ImageArrayDataModule(images, torch.as_tensor(labels), manifest, task="binary",
                                label_names=["tumour"], dev_set=get("split", "d1"),
                                batch_size=int(get("batch_size", 64)), num_workers=int(get("num_workers", 0)),
                                seed=int(get("seed")))
