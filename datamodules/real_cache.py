"""Real data sets indexed once and decoded once: the index (labels, patients, ids, layout) and the
images at the study's resolution are cached beside the synthetic sets, keyed by the source's identity.

Entry key: the source, its resolved root, the `data` keys its reader reads, and the path, size and
modification time of the files that index it (the label CSV, the `.npz`, the HDF5 files). The index
entry also keeps the data's content (`fingerprint`): the sha256 of those index files (hashed once
per version of them) and the size and modification time of every image file, as they were indexed.
The images entry is named by the current fingerprint, so replaced images are decoded again.

An entry is `real-<source>-<key>.index.npz` (written after the data is indexed and checked) and, per
content and image size, `real-<source>-<key>-<content>-<size>px.images` (raw uint8 NCHW, decoded
once with a progress bar) beside its `.pt` record of the array's shape and sha256 (written last: it
marks a complete entry). Both carry a checksum: a damaged entry is reported in one line, treated as
absent (read from the source again and rewritten) and never used. What a study has read in memory
(indexes, content records, checked entries, generated synthetic sets) is a `DataCache` it holds.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from medcommon.atomic import replaced
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .fingerprint import fingerprint as content_digest
from .fingerprint import image_files, image_stamps, index_hashes, sha256_file
from .readers.source import Source
from .sources import SOURCE_SPECS
from .synthetic.store import StoredImages

INDEX_VERSION = 3  # 2: images reduced in blocks, JPEGs decoded at reduced scale; 3: content and checksums kept


@dataclass(frozen=True)
class Entry:
    """A real source in the cache: its identity key, the call that reads it, the cache folder (None:
    no cache), the source's name, its root and the files that index it."""
    key: str
    read: Callable[[], Source]
    cache_dir: Path | None
    source: str
    root: Path
    files: tuple[Path, ...]

    @property
    def index_file(self) -> Path:
        return self.cache_dir / f"real-{self.source}-{self.key}.index.npz"


def identity(source: str, root: Path, get, index_files: list[Path]) -> str:
    """The key of a real source: what its reader reads and the state of its index files."""
    files = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) if f.is_file() else (str(f), None, None)
             for f in index_files]
    keys = {k: _plain(get(k, None)) for k in SOURCE_SPECS[source].reader_keys}
    text = json.dumps({"source": source, "root": str(root.resolve()), "keys": keys, "files": files,
                       "version": INDEX_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else value


class DataCache:
    """What a study has read of its data, kept as long as the study (a `DomainData` owns one, or is
    handed the study's): each real source's index and content record and its last fingerprint (by
    entry key), the images files whose sha256 matched and the damaged entries already reported (by
    path, size and modification time), and the synthetic sets generated (by their parameters)."""

    def __init__(self):
        self.indexes: dict[str, Source] = {}  # entry key -> the Source its reader made
        self.content: dict[str, dict] = {}  # entry key -> {"index": hashes, "images": stamps when indexed}
        self.fingerprints: dict[str, str] = {}  # entry key -> its fingerprint, as last computed
        self.verified: set[tuple] = set()
        self.warned: set[tuple] = set()
        self.generated: dict[tuple, tuple] = {}  # synthetic: (params, cache folder) -> (images, labels, patients)

    def images_file(self, entry: Entry, size: int) -> Path:
        """The images entry at `size` px of the data's current content."""
        content = self.fingerprint(entry, fresh=True).removeprefix("sha256:")[:16]
        return entry.cache_dir / f"real-{entry.source}-{entry.key}-{content}-{size}px.images"

    def indexed(self, entry: Entry) -> Source:
        """The source's index: read back from the cache, else made by `entry.read()` (once per cache;
        the cache on disk is written by `decoded`, never here, so a plan writes nothing)."""
        if entry.key not in self.indexes:
            found = self.read_index(entry.index_file) if entry.cache_dir is not None else None
            if found is not None:
                self.indexes[entry.key], self.content[entry.key] = found
            else:
                self.indexes[entry.key] = entry.read()
                self.content[entry.key] = self._content(entry, self.indexes[entry.key])
        return self.indexes[entry.key]

    def fingerprint(self, entry: Entry, fresh: bool = False) -> str:
        """The data's content (`fingerprint.fingerprint`): its index files' sha256 as indexed, and each
        image file's size and modification time now (as indexed while the file is gone: the cache holds
        its pixels). Computed once per cache unless `fresh` (a study's data read refreshes it)."""
        self.indexed(entry)
        if fresh or entry.key not in self.fingerprints:
            content = self.content[entry.key]
            was = [list(stamp) for stamp in content["images"]]
            now = image_stamps(entry.root, [stamp[0] for stamp in was])
            stamps = [old if new[1] is None else list(new) for old, new in zip(was, now)]
            self.fingerprints[entry.key] = content_digest(content["index"], stamps)
        return self.fingerprints[entry.key]

    def _content(self, entry: Entry, data: Source) -> dict:
        """The content record of freshly read data (index hashes kept from this cache when known: the
        entry key holds the index files' stat)."""
        hashes = self.content.get(entry.key, {}).get("index") or index_hashes(entry.root, list(entry.files))
        return {"index": hashes, "images": [list(s) for s in image_stamps(entry.root, image_files(data, entry.root))]}

    def decoded(self, entry: Entry, size: int, workers: int = 0) -> Source:
        """The source with its images at `size` px read from the cache (`StoredImages`), decoding them
        into it first when they are not there. No cache (`cache_dir` None): the reader's Source."""
        if entry.cache_dir is None:
            data = self.indexed(entry)
            self.fingerprint(entry, fresh=True)
            return data
        found = self.read_index(entry.index_file)
        if found is not None:
            self.content[entry.key] = found[1]
            stored = self.read_images(self.images_file(entry, size))
            if stored is not None:
                return _with_reader(found[0], stored)
        data = self.indexes.pop(entry.key, None)
        if data is None or data.reader is None:
            data = entry.read()  # a cached index has no reader: the files are read again
        content = self.content[entry.key] = self._content(entry, data)
        entry.cache_dir.mkdir(parents=True, exist_ok=True)
        with replaced(entry.index_file, prefix="tmp") as name:
            _write_index(str(name), data, content)
        index, _ = self.read_index(entry.index_file)
        stored = _decode(data, self.images_file(entry, size), size, workers)
        return _with_reader(index, stored)

    def decoding_seconds(self, entry: Entry, size: int, sample: int = 8) -> float:
        """About how long `decoded` will take to decode the source's images at `size` px: 0 when the
        cache holds them, else the images times the median seconds the reader takes for one (decoding
        and resizing), timed on `sample` images spread over the source. Writes nothing."""
        data = self.indexed(entry)
        if entry.cache_dir is not None and entry.index_file.is_file() \
                and self.read_images(self.images_file(entry, size)) is not None:
            return 0.0
        if data.reader is None:  # a cached index without its images: the files are read again, as `decoded` does
            data = self.indexes[entry.key] = entry.read()
        n = len(data.labels)
        seconds = []
        for i in np.linspace(0, n - 1, min(sample, n)).astype(int):
            start = time.perf_counter()
            data.reader(int(i))
            seconds.append(time.perf_counter() - start)
        return n * float(np.median(seconds))

    def _warn(self, path: Path, what: str, then: str) -> None:
        """One stderr line per damaged entry (per version of its file) in a cache."""
        try:
            version = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
        except OSError:
            version = (str(path), None, None)
        if version not in self.warned:
            self.warned.add(version)
            print(f"warning: {path}: {what}; {then}", file=sys.stderr)

    def read_index(self, path: Path) -> tuple[Source, dict] | None:
        """(the index, its content record) from an entry whose checksum matches; None (one warning line
        when the file is there) otherwise."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            if _checksum({k: v for k, v in arrays.items() if k != "checksum"}) != str(arrays.pop("checksum")):
                raise ValueError("checksum mismatch")
            meta, content = json.loads(str(arrays["meta"])), json.loads(str(arrays["content"]))
            return Source(labels=torch.from_numpy(arrays["labels"]), patients=arrays["patients"],
                          sample_ids=arrays["sample_ids"], task=meta["task"], label_names=meta["label_names"],
                          channels=int(meta["channels"]), test_mask=arrays.get("test_mask")), content
        except Exception as err:
            self._warn(path, f"damaged cache entry ({type(err).__name__}: {' '.join(str(err).split())[:80]})",
                       "indexing the data again")
            return None

    def read_images(self, path: Path) -> StoredImages | None:
        """The decoded images of an entry whose record and sha256 match (checked once per version of
        the file in a cache); None (one warning line when the record is there) otherwise."""
        record = path.with_suffix(".pt")
        if not record.is_file():
            return None
        try:
            saved = torch.load(record, weights_only=True)
            shape = tuple(int(d) for d in saved["shape"])
            if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
                raise ValueError("images file missing or of the wrong size")
            stat = path.stat()
            version = (str(path), stat.st_size, stat.st_mtime_ns)
            if version not in self.verified:
                if sha256_file(path) != saved["sha256"]:
                    raise ValueError("checksum mismatch")
                self.verified.add(version)
            return StoredImages(path, shape)
        except Exception as err:
            self._warn(record, f"damaged cache entry ({type(err).__name__}: {' '.join(str(err).split())[:80]})",
                       "decoding the images again")
            return None


def _with_reader(index: Source, stored: StoredImages) -> Source:
    index.reader = stored
    return index


def _write_index(name: str, data: Source, content: dict) -> None:
    meta = json.dumps({"task": data.task, "label_names": list(data.label_names), "channels": int(data.channels)})
    arrays = {"labels": data.labels.numpy(), "patients": np.asarray(data.patients).astype(str),
              "sample_ids": np.asarray(data.sample_ids if data.sample_ids is not None
                                       else np.arange(len(data.patients))).astype(str),
              "meta": np.asarray(meta), "content": np.asarray(json.dumps(content))}
    if data.test_mask is not None:
        arrays["test_mask"] = np.asarray(data.test_mask, bool)
    with open(name, "wb") as handle:
        np.savez(handle, checksum=np.asarray(_checksum(arrays)), **arrays)


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 of the arrays' names, types, shapes and bytes."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


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

    digest = hashlib.sha256()

    def write(name: str) -> None:
        done = 0
        with open(name, "wb") as handle, tqdm(total=n, desc=f"decoding images at {size} px", unit="img",
                                              leave=False, disable=None) as bar:
            for batch in loader:
                if tuple(batch.shape[1:]) != shape[1:]:
                    raise ValueError(f"image {done}: decoded as {tuple(batch.shape[1:])}, expected {shape[1:]}")
                raw = batch.numpy().tobytes()
                handle.write(raw)
                digest.update(raw)
                done += len(batch)
                bar.update(len(batch))

    with replaced(path, prefix="tmp") as name:
        write(str(name))
    record = {"shape": torch.tensor(shape), "sha256": digest.hexdigest()}
    with replaced(path.with_suffix(".pt"), prefix="tmp") as name:
        torch.save(record, str(name))
    return StoredImages(path, shape)
