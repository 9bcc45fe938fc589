"""On-disk cache of generated sets, keyed by a hash of the generator's parameters."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

# Bump when a generator changes its output, so stale cached sets are not reused.
GENERATOR_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("MEDTRANSFER_CACHE", Path.home() / ".cache" / "medtransfer"))


def cache_key(params: dict) -> str:
    text = json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_generate(generate, params: dict, cache_dir: str | Path | None):
    """`generate(**generator args)` -> (images, labels, patients), read from / written to
    `cache_dir/<domain>-<key>.pt` (atomic write: temp file + rename). `cache_dir=None` skips the cache.
    `params` holds `domain` plus the generator's keyword arguments."""
    args = {k: v for k, v in params.items() if k != "domain"}
    if cache_dir is None:
        return generate(**args)
    path = Path(cache_dir) / f"{params['domain']}-{cache_key(params)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            return saved["images"], saved["labels"], saved["patients"]
        except Exception as err:  # a damaged cache entry is regenerated, not trusted
            print(f"{path}: unreadable cache entry ({type(err).__name__}), regenerating")
    images, labels, patients = generate(**args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"images": images, "labels": labels, "patients": patients}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return images, labels, patients
