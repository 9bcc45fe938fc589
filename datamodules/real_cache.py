"""Real data sets indexed once and decoded once: the index (labels, patients, ids, layout) and the
images at the study's resolution are cached beside the synthetic sets, keyed by the source's identity.

Identity: the source, its resolved root, the `data` keys its reader reads, and the path, size and
modification time of the files that index it (the label CSV, the `.npz`, the HDF5 files). Image
files under an unchanged index are taken as unchanged (a data release is immutable); touch the
index file, or delete the entry, after editing images in place.

An entry is `real-<source>-<key>.index.npz` (written after the data is indexed and checked) and, per
image size, `real-<source>-<key>-<size>px.images` (raw uint8 NCHW, decoded once with a progress
bar) beside its `.pt` record of the array's shape (written last: it marks a complete entry).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .readers.source import Source
from .synthetic.store import StoredImages

INDEX_VERSION = 2  # 2: images reduced in blocks before filtering, JPEGs decoded at reduced scale
# the `data` keys each reader reads (besides root and image size)
READER_KEYS = {"medmnist": ("flag", "npz_size", "ordinal_threshold"),
               "csv": ("csv_file", "path_column", "label_column", "patient_column", "labels", "task", "channels"),
               "dicom": ("csv_file", "path_column", "label_column", "patient_column", "labels", "task", "channels")}
_INDEXED: dict[str, Source] = {}  # identity key -> the Source its reader made (this process)


def identity(source: str, root: Path, get, index_files: list[Path]) -> str:
    """The key of a real source: what its reader reads and the state of its index files."""
    files = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) if f.is_file() else (str(f), None, None)
             for f in index_files]
    keys = {k: _plain(get(k, None)) for k in READER_KEYS.get(source, ())}
    text = json.dumps({"source": source, "root": str(root.resolve()), "keys": keys, "files": files,
                       "version": INDEX_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else value


def indexed(key: str, read: Callable[[], Source], cache_dir: Path | None, source: str) -> Source:
    """The source's index: read back from the cache, else made by `read()` (once per process; the
    cache is written by `decoded`, never here, so a plan writes nothing)."""
    if key in _INDEXED:
        return _INDEXED[key]
    found = _read_index(cache_dir / f"real-{source}-{key}.index.npz") if cache_dir is not None else None
    _INDEXED[key] = found if found is not None else read()
    return _INDEXED[key]


def decoded(key: str, read: Callable[[], Source], cache_dir: Path | None, source: str, size: int,
            workers: int = 0) -> Source:
    """The source with its images at `size` px read from the cache (`StoredImages`), decoding them
    into it first when they are not there. No cache (`cache_dir` None): the reader's Source."""
    if cache_dir is None:
        return indexed(key, read, None, source)
    index_file = cache_dir / f"real-{source}-{key}.index.npz"
    images_file = cache_dir / f"real-{source}-{key}-{size}px.images"
    index = _read_index(index_file)
    stored = _read_images(images_file) if index is not None else None
    if stored is not None:
        return _with_reader(index, stored)
    data = _INDEXED.pop(key, None)
    if data is None or data.reader is None:
        data = read()  # a cached index has no reader: the files are read again
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic(index_file, lambda name: _write_index(name, data))
    index = _read_index(index_file)
    stored = _decode(data, images_file, size, workers)
    return _with_reader(index, stored)


def decoding_seconds(key: str, read: Callable[[], Source], cache_dir: Path | None, source: str, size: int,
                     sample: int = 8) -> float:
    """About how long `decoded` will take to decode the source's images at `size` px: 0 when the
    cache holds them, else the images times the median seconds the reader takes for one (decoding
    and resizing), timed on `sample` images spread over the source. Writes nothing."""
    if cache_dir is not None and _read_index(cache_dir / f"real-{source}-{key}.index.npz") is not None \
            and _read_images(cache_dir / f"real-{source}-{key}-{size}px.images") is not None:
        return 0.0
    data = indexed(key, read, cache_dir, source)
    if data.reader is None:  # a cached index without its images: the files are read again, as `decoded` does
        data = _INDEXED[key] = read()
    n = len(data.labels)
    seconds = []
    for i in np.linspace(0, n - 1, min(sample, n)).astype(int):
        start = time.perf_counter()
        data.reader(int(i))
        seconds.append(time.perf_counter() - start)
    return n * float(np.median(seconds))


def _with_reader(index: Source, stored: StoredImages) -> Source:
    index.reader = stored
    return index


def _write_index(name: str, data: Source) -> None:
    meta = json.dumps({"task": data.task, "label_names": list(data.label_names), "channels": int(data.channels)})
    arrays = {"labels": data.labels.numpy(), "patients": np.asarray(data.patients).astype(str),
              "sample_ids": np.asarray(data.sample_ids if data.sample_ids is not None
                                       else np.arange(len(data.patients))).astype(str),
              "meta": np.asarray(meta)}
    if data.test_mask is not None:
        arrays["test_mask"] = np.asarray(data.test_mask, bool)
    with open(name, "wb") as handle:
        np.savez(handle, **arrays)


def _read_index(path: Path) -> Source | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            return Source(labels=torch.from_numpy(npz["labels"]), patients=npz["patients"],
                          sample_ids=npz["sample_ids"], task=meta["task"], label_names=meta["label_names"],
                          channels=int(meta["channels"]),
                          test_mask=npz["test_mask"] if "test_mask" in npz.files else None)
    except Exception as err:
        print(f"{path}: unreadable cache entry ({type(err).__name__}), indexing again")
        return None


def _read_images(path: Path) -> StoredImages | None:
    record = path.with_suffix(".pt")
    if not record.is_file():
        return None
    try:
        shape = tuple(int(d) for d in torch.load(record, weights_only=True)["shape"])
        if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
            raise ValueError("images file missing or of the wrong size")
        return StoredImages(path, shape)
    except Exception as err:
        print(f"{record}: unreadable cache entry ({type(err).__name__}), decoding again")
        return None


class _Images(Dataset):
    def __init__(self, reader, n: int):
        self.reader, self.n = reader, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.reader(i)


def _decode(data: Source, path: Path, size: int, workers: int) -> StoredImages:
    """Every image through the source's reader, in order, into `path` (atomically)."""
    n = len(data.labels)
    shape = (n, int(data.channels), size, size)
    loader = DataLoader(_Images(data.reader, n), batch_size=256, num_workers=workers)

    def write(name: str) -> None:
        done = 0
        with open(name, "wb") as handle, tqdm(total=n, desc=f"decoding images at {size} px", unit="img",
                                              leave=False, disable=None) as bar:
            for batch in loader:
                if tuple(batch.shape[1:]) != shape[1:]:
                    raise ValueError(f"image {done}: decoded as {tuple(batch.shape[1:])}, expected {shape[1:]}")
                handle.write(batch.numpy().tobytes())
                done += len(batch)
                bar.update(len(batch))

    _atomic(path, write)
    _atomic(path.with_suffix(".pt"), lambda name: torch.save({"shape": torch.tensor(shape)}, name))
    return StoredImages(path, shape)


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """`write(temporary name)` then rename to `path`: a failed write leaves nothing behind."""
    fd, name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(name)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.remove(name)
