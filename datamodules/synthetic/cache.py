"""On-disk cache of generated sets, keyed by a hash of the generator's parameters.

An entry is two files: `<domain>-<key>.images` (the uint8 NCHW images, raw, written chunk by chunk
as they are generated) and `<domain>-<key>.pt` (labels, patient ids and the array's shape; written
last, so it marks a complete entry). Images are read back one at a time (`StoredImages`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .store import StoredImages, file_sink, memory_sink

# Bump when a generator changes its output, so stale cached sets are not reused.
GENERATOR_VERSION = 1


def cache_root(setting: str | None = "") -> Path | None:
    """The cache folder for a `data.cache_dir` setting: "" = $MEDTRANSFER_CACHE, else
    ~/.cache/medtransfer (read when called, not at import); "none" = no cache (None)."""
    setting = str(setting or "")
    if setting.lower() == "none":
        return None
    return Path(setting or os.environ.get("MEDTRANSFER_CACHE") or Path.home() / ".cache" / "medtransfer")


def generator_params(domain: str, num_patients: int, images_per_patient: int, size: int, seed: int,
                     signal: float) -> dict:
    """The parameters that name a generated set (`domain` plus the generator's keyword arguments)."""
    return dict(domain=domain, num_patients=int(num_patients), images_per_patient=int(images_per_patient),
                size=int(size), seed=int(seed), signal=float(signal))


def cache_key(params: dict) -> str:
    text = json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_path(params: dict, cache_dir: str | Path) -> Path:
    """Where the set generated with `params` is cached under `cache_dir` (its `.pt` file; the
    images lie beside it with the suffix `.images`)."""
    return Path(cache_dir) / f"{params['domain']}-{cache_key(params)}.pt"


def cached_generate(generate, params: dict, cache_dir: str | Path | None):
    """`generate(**generator args, empty=...)` -> (images, labels, patients), read from or written
    to the cache under `cache_dir`: images are then `StoredImages` (read per image from disk).
    `cache_dir=None` skips the cache and returns the images as an in-memory tensor. Either way
    generation shows a progress bar. `params` holds `domain` plus the generator's keyword arguments."""
    args = {k: v for k, v in params.items() if k != "domain"}
    description = f"generating {params['domain']} images"
    if cache_dir is None:
        images, labels, patients = generate(**args, empty=memory_sink(description))
        images.close()
        return images.tensor, labels, patients
    path = entry_path(params, cache_dir)
    found = _read_entry(path)
    if found is not None:
        return found
    path.parent.mkdir(parents=True, exist_ok=True)
    image_file = _temporary(path.parent)
    fd = os.open(image_file, os.O_WRONLY)
    try:
        try:
            images, labels, patients = generate(**args, empty=file_sink(fd, description))
            images.close()
        finally:
            os.close(fd)
        os.replace(image_file, path.with_suffix(".images"))
        record = _temporary(path.parent)
        try:
            torch.save({"labels": labels, "patients": patients, "shape": torch.tensor(images.shape)}, record)
            os.replace(record, path)
        finally:
            _remove(record)
    finally:
        _remove(image_file)
    return StoredImages(path.with_suffix(".images"), images.shape), labels, patients


def _read_entry(path: Path):
    """A complete, readable entry as (StoredImages, labels, patients), else None (a damaged entry
    is regenerated, not trusted; its record is read as plain tensors only)."""
    if not path.is_file():
        return None
    images = path.with_suffix(".images")
    try:
        saved = torch.load(path, weights_only=True)
        shape = tuple(int(d) for d in saved["shape"])
        expected = shape[0] * shape[1] * shape[2] * shape[3]
        if not images.is_file() or images.stat().st_size != expected:
            raise ValueError("images file missing or of the wrong size")
        return StoredImages(images, shape), saved["labels"], saved["patients"]
    except Exception as err:
        print(f"{path}: unreadable cache entry ({type(err).__name__}), regenerating")
        return None


def _temporary(folder: Path) -> str:
    fd, name = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    return name


def _remove(name: str) -> None:
    if os.path.exists(name):
        os.remove(name)
