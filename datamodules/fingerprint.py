"""The content of a real data set as one digest: what its identity holds instead of its location.

Index files (label CSVs, MedMNIST `.npz`, PCam HDF5) count by their sha256; image files by their
size and modification time (a full content hash of a ChestX-ray14 release, 112,120 PNGs and over 40 GB,
would read the whole release at every change of its index; `mv` keeps both stat fields, `cp -r`
gives new times and so new work). Every name is relative to the data root, never the root itself,
so a folder moved unchanged keeps its fingerprint.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .readers.source import Source


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def relative(root: Path, path: Path | str) -> str:
    """`path` named relative to `root` (as given or resolved); its file name when it lies elsewhere."""
    path = Path(path)
    for base, target in ((root, path), (root.resolve(), path.resolve())):
        if target.is_relative_to(base):
            return target.relative_to(base).as_posix()
    return path.name


def index_hashes(root: Path, files: list[Path]) -> dict[str, str | None]:
    """Relative name -> sha256 of each index file (None for one that is not there)."""
    return {relative(root, f): sha256_file(f) if f.is_file() else None for f in files}


def image_files(data: Source, root: Path) -> list[str]:
    """The image files a source's reader reads, relative to `root` ([] when its images sit in an
    index file: MedMNIST, PCam)."""
    return [relative(root, path) for path in getattr(data.reader, "paths", None) or []]


def image_stamps(root: Path, names: list[str]) -> list[tuple[str, int | None, int | None]]:
    """(name, size, modification time in ns) of each image file under `root` (None, None: missing)."""
    stamps = []
    for name in names:
        try:
            stat = os.stat(root / name)
            stamps.append((name, stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append((name, None, None))
    return stamps


def fingerprint(hashes: dict[str, str | None], stamps: list) -> str:
    """`sha256:<hex>` of the index files' hashes and the image files' stamps."""
    text = json.dumps({"index": hashes, "images": stamps}, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
