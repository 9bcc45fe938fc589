"""On-disk cache of generated sets, keyed by a hash of the generator's parameters.

An entry is two files: `<domain>-<key>.images` (the uint8 NCHW images, raw, written chunk by chunk
as they are generated) and `<domain>-<key>.pt` (labels, patient ids, the array's shape, the entry's
`ENTRY_FORMAT` and a blake2b checksum of all of them and of the images file's bytes; written last, so
it marks a complete entry). Images are read back one at a time (`StoredImages`). An entry that is
incomplete, of another format or does not match its checksum is generated again, with one warning
line on stderr; it is never read.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from medcommon.atomic import replaced
from tqdm.auto import tqdm

from .store import StoredImages, file_sink, memory_sink

# Bump when a generator changes its output, so stale cached sets are not reused.
GENERATOR_VERSION = 1
ENTRY_FORMAT = 2  # 2: the record holds a checksum of the entry (1: none; generated again)


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
    with replaced(path.with_suffix(".images"), prefix="tmp") as image_file:
        fd = os.open(image_file, os.O_WRONLY)
        try:
            images, labels, patients = generate(**args, empty=file_sink(fd, description))
            images.close()
        finally:
            os.close(fd)
    with replaced(path, prefix="tmp") as record:
        shape = torch.tensor(images.shape)
        torch.save({"labels": labels, "patients": patients, "shape": shape, "format": ENTRY_FORMAT,
                    "digest": entry_digest(path.with_suffix(".images"), shape, labels, patients)}, str(record))
    return StoredImages(path.with_suffix(".images"), images.shape), labels, patients


def entry_digest(images: Path, shape: torch.Tensor, labels: torch.Tensor, patients: torch.Tensor) -> str:
    """The blake2b checksum of an entry: its tensors (dtype, shape and bytes) and its images file, read in pieces."""
    check = hashlib.blake2b(digest_size=16)
    for tensor in (shape, labels, patients):
        check.update(f"{tensor.dtype} {tuple(tensor.shape)};".encode())
        check.update(tensor.contiguous().numpy().tobytes())
    with open(images, "rb") as file:
        while piece := file.read(1 << 20):
            check.update(piece)
    return check.hexdigest()


def _read_entry(path: Path):
    """A complete entry that matches its checksum as (StoredImages, labels, patients), else None (a
    damaged entry is generated again, never read; its record is read as plain tensors only)."""
    if not path.is_file():
        return None
    try:
        return _checked_entry(path)
    except Exception as err:
        reason = str(err) if isinstance(err, ValueError) else f"unreadable ({type(err).__name__})"
        tqdm.write(f"medtransfer: warning: {path}: {reason}; generating the data again", file=sys.stderr)
        return None


def _checked_entry(path: Path):
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != ENTRY_FORMAT:
        raise ValueError(f"cache entry of another format, this version reads {ENTRY_FORMAT}")
    shape, labels, patients = saved.get("shape"), saved.get("labels"), saved.get("patients")
    if not all(isinstance(t, torch.Tensor) for t in (shape, labels, patients)) or shape.shape != (4,):
        raise ValueError("cache entry without its shape, labels and patients as tensors")
    images = path.with_suffix(".images")
    shape = tuple(int(d) for d in shape)
    if min(shape) < 1:
        raise ValueError(f"cache entry of shape {shape}")
    if not images.is_file() or images.stat().st_size != shape[0] * shape[1] * shape[2] * shape[3]:
        raise ValueError(f"images file {images.name} missing or of the wrong size")
    if saved.get("digest") != entry_digest(images, saved["shape"], labels, patients):
        raise ValueError("cache entry damaged (checksum mismatch)")
    return StoredImages(images, shape), labels, patients
