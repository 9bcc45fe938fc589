"""`build_datamodule(cfg)`: domain x source x development set -> LightningDataModule."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .base import DevSetDataModule
from .readers.chestxray14 import read_chestxray14
from .readers.csv_folder import read_csv_folder
from .readers.kaggle_dr import read_kaggle_dr
from .readers.medmnist_npz import DEFAULT_FLAG, FLAGS, read_medmnist
from .readers.pcam import read_pcam
from .readers.source import Source
from .splits import TEST_FRACTION, VAL_FRACTION, split_manifest
from .synthetic import GENERATORS
from .synthetic.cache import cache_root, cached_generate, generator_params
from .synthetic.store import StoredImages


DOMAINS = ("ophthalmology", "radiology", "pathology")
SOURCES = ("synthetic", "pcam", "chestxray14", "kaggle_dr", "medmnist", "csv")
# sources tied to one domain
SOURCE_DOMAIN = {"pcam": "pathology", "chestxray14": "radiology", "kaggle_dr": "ophthalmology"}


def build_datamodule(cfg) -> DevSetDataModule:
    """`cfg` (mapping or attribute object), keys as in experiments.config.DataConfig:
    domain, source, split (d1, d2, d2/2, d1/10), image_size, seed, batch_size, num_workers,
    pin_memory, test_fraction, val_fraction; synthetic: num_patients, images_per_patient, signal, cache_dir
    ('' = default, 'none' = off); real: root; medmnist: flag, npz_size; csv: csv_file, path_column,
    label_column, patient_column, labels, task, channels.
    All input is validated here, before any training starts."""
    get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
    domain, source = get("domain"), get("source")
    if domain not in DOMAINS:
        raise ValueError(f"data.domain: unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if source not in SOURCES:
        raise ValueError(f"data.source: unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if SOURCE_DOMAIN.get(source, domain) != domain:
        raise ValueError(f"data.source: {source} holds {SOURCE_DOMAIN[source]} data, not {domain}")
    seed, size = int(get("seed", 0)), int(get("image_size"))
    data = _synthetic(domain, get, size, seed) if source == "synthetic" else _real(domain, source, get, size)
    manifest = split_manifest(data.patients, seed, float(get("test_fraction", TEST_FRACTION)),
                              float(get("val_fraction", VAL_FRACTION)), sample_ids=data.sample_ids,
                              test_mask=data.test_mask)
    return DevSetDataModule(data.labels, manifest, task=data.task, label_names=data.label_names,
                            channels=data.channels, dev_set=get("split", "d1"), images=data.images,
                            reader=data.reader, batch_size=int(get("batch_size", 64)),
                            num_workers=int(get("num_workers", 0)),
                            pin_memory=bool(get("pin_memory", False)))


def _synthetic(domain: str, get, size: int, seed: int) -> Source:
    cache_dir = cache_root(get("cache_dir", ""))
    params = generator_params(domain, get("num_patients"), get("images_per_patient"), size, seed,
                              get("signal", 1.0))
    images, labels, patients = _generated(tuple(sorted(params.items())), cache_dir and str(cache_dir))
    _, label_names, task = GENERATORS[domain]
    patients = patients.numpy()
    stored = isinstance(images, StoredImages)  # read per image from the cache, not held in memory
    return Source(labels=labels, patients=patients, sample_ids=None, task=task, label_names=label_names,
                  channels=images.shape[1], images=None if stored else images,
                  reader=images if stored else None)


@lru_cache(maxsize=4)
def _generated(params: tuple, cache_dir: str | None):
    params = dict(params)
    return cached_generate(GENERATORS[params["domain"]][0], params, cache_dir)


def _real(domain: str, source: str, get, size: int) -> Source:
    root = str(get("root", "") or "")
    if not root:
        raise ValueError(f"data.root: required for source {source}")
    root = Path(root).expanduser()
    if source == "pcam":
        return read_pcam(root, size)
    if source == "chestxray14":
        return read_chestxray14(root, size)
    if source == "kaggle_dr":
        return read_kaggle_dr(root, size)
    if source == "medmnist":
        flag = str(get("flag", "") or DEFAULT_FLAG[domain])
        npz_size = int(get("npz_size", 0) or 0)
        if not npz_size and flag in FLAGS:
            npz_size = min([s for s in FLAGS[flag].available_sizes if s >= size] or [224])
        return read_medmnist(root, flag, npz_size, size)
    channels = int(get("channels", 0) or 0) or (1 if domain == "radiology" else 3)
    if channels not in (1, 3):
        raise ValueError(f"data.channels: {channels}; image files are read as 1 (grey) or 3 (RGB) channels")
    task = str(get("task", "") or "binary")
    if task not in ("binary", "multiclass", "multilabel"):
        raise ValueError(f"data.task: unknown task {task!r}; valid: binary, multiclass, multilabel")
    return read_csv_folder(root, size, str(get("csv_file", "") or "labels.csv"), channels, task,
                           list(get("labels", None) or []), str(get("path_column", "") or "path"),
                           str(get("label_column", "") or "label"), str(get("patient_column", "") or ""))
