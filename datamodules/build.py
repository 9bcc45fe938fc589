"""A domain's data read once (`DomainData`) and its development sets as LightningDataModules."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from .base import DevSetDataModule
from .readers.images import DEFAULT_MAX_PIXELS, PixelCap, TooManyPixels, over_cap_summary
from .readers.source import Source, positive_label
from .real_cache import DataCache, Entry, identity
from .settings import DataConfig
from .sources import SOURCE_SPECS, domain_problem
from .split_files import file_manifest
from .splits import TEST_FRACTION, VAL_FRACTION, split_manifest
from .synthetic import GENERATORS
from .synthetic.cache import cache_root, cached_generate, generator_params
from .synthetic.store import StoredImages

class DomainData:
    """One domain's data set as `cfg` names it (keys as in `datamodules.settings.DataConfig`): domain,
    source, image_size, seed, batch_size, num_workers, pin_memory, test_fraction, val_fraction, splits (split files, see split_files);
    synthetic: num_patients, images_per_patient, signal, cache_dir ('' = default, 'none' = off);
    real: root, max_pixels; medmnist: flag, npz_size, ordinal_threshold; csv and dicom: csv_file, path_column,
    label_column, patient_column, labels, task, channels.

    The names are checked when it is made; `prepare()` reads, indexes and validates the data and
    draws the split manifest, once: every `datamodule(dev_set)` shares them, so a study reads each
    domain once however many models it trains. What it reads is kept in `cache` (`DataCache`; a study
    hands each of its `DomainData` the one it holds, so its plan's index is not read again).
    """

    def __init__(self, cfg, cache: DataCache | None = None):
        self.cfg = dict(cfg.items()) if hasattr(cfg, "items") else dict(vars(cfg))  # picklable (DDP spawn)
        self.cache = DataCache() if cache is None else cache
        domain, source = self.get("domain"), self.get("source")
        problem = domain_problem(domain, source)
        if problem:
            raise ValueError(problem)
        self.domain, self.source = domain, source
        self._data: Source | None = None
        self.manifest = None

    def get(self, key: str, default=None):
        return self.cfg.get(key, default)

    def prepare(self) -> "DomainData":
        """Read and check the data and split it (the first call only); returns self."""
        if self._data is None:
            get, size, seed = self.get, int(self.get("image_size")), int(self.get("seed", 0))
            data = (_synthetic(self.domain, get, size, seed, self.cache) if self.source == "synthetic"
                    else _real(self.domain, self.source, get, size, self.cache))
            self.manifest = domain_manifest(data, get, seed)
            self._data = data
        return self

    def index(self):
        """(the data's index, its split manifest) without decoding any image: a real source's
        cached index, else its reader's (checked; cached by `prepare`); synthetic data is prepared."""
        if self._data is not None or self.source == "synthetic":
            self.prepare()
            return self._data, self.manifest
        get = self.get
        data = _real(self.domain, self.source, get, int(get("image_size")), self.cache, decode=False)
        return data, domain_manifest(data, get, int(get("seed", 0)))

    def fingerprint(self) -> str:
        """The content of a real source (`DataCache.fingerprint`: its index files by sha256, its
        image files by size and modification time), as the cache's last read of the data found
        it (`prepare` and `index` refresh it); "" for synthetic data, which its generator's keys name."""
        if self.source == "synthetic":
            return ""
        return self.cache.fingerprint(_real_entry(self.domain, self.source, self.get, int(self.get("image_size"))))

    def decoding_seconds(self) -> float:
        """About how long `prepare` will spend decoding and resizing a real source's images (0 when
        they are cached at this size, and for synthetic data); timed on a few images, writes nothing."""
        if self._data is not None or self.source == "synthetic":
            return 0.0
        size = int(self.get("image_size"))
        return self.cache.decoding_seconds(_real_entry(self.domain, self.source, self.get, size), size)

    def __getattr__(self, name: str):
        if name in ("task", "label_names", "channels", "labels", "images", "reader"):
            return getattr(self.prepare()._data, name)
        raise AttributeError(name)

    def datamodule(self, dev_set: str) -> DevSetDataModule:
        """The LightningDataModule of one development set (d1, d2, d2/2, d1/10) over this data."""
        get = self.get
        return DevSetDataModule(self, dev_set, batch_size=int(get("batch_size", 64)),
                                num_workers=int(get("num_workers", 0)), pin_memory=bool(get("pin_memory", False)))


def domain_manifest(data: Source, get, seed: int):
    """The split manifest: from the files `data.splits` names, else drawn from `seed`; with the
    binary task's positive label (`positive_label` column, "" for other tasks)."""
    if get("splits", ""):
        ids = data.sample_ids if data.sample_ids is not None else np.arange(len(data.patients))
        manifest = file_manifest(str(get("splits")), ids, data.patients)
    else:
        manifest = split_manifest(data.patients, seed, float(get("test_fraction", TEST_FRACTION)),
                                  float(get("val_fraction", VAL_FRACTION)), sample_ids=data.sample_ids,
                                  test_mask=data.test_mask)
    manifest["positive_label"] = positive_label(data.task, data.label_names)
    return manifest


def build_datamodule(cfg=None, /, **settings) -> DevSetDataModule:
    """The set-up datamodule of development set `dev_set` (default d1) of the data that `cfg` (a
    mapping or an object with the `data` keys) and the keywords name, keywords taking precedence
    (`build_datamodule(domain="pathology", image_size=64)`); keys left out take the study schema's
    defaults (`DataConfig`). An unknown key is refused in one line; all input is read and validated here."""
    given = {} if cfg is None else dict(cfg.items()) if hasattr(cfg, "items") else dict(vars(cfg))
    given.update(settings)
    dev_set = given.pop("dev_set", "d1")
    defaults = asdict(DataConfig())
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"build_datamodule: unknown data key {unknown[0]!r}; valid: dev_set, {', '.join(defaults)}")
    data = DomainData({**defaults, **given}).datamodule(dev_set)
    data.setup()
    return data


def _synthetic(domain: str, get, size: int, seed: int, cache: DataCache) -> Source:
    cache_dir = cache_root(get("cache_dir", ""))
    params = generator_params(domain, get("num_patients"), get("images_per_patient"), size, seed,
                              get("signal", 1.0))
    images, labels, patients = _generated(params, cache_dir and str(cache_dir), cache)
    _, label_names, task = GENERATORS[domain]
    patients = patients.numpy()
    stored = isinstance(images, StoredImages)  # read per image from the cache, not held in memory
    return Source(labels=labels, patients=patients, sample_ids=None, task=task, label_names=label_names,
                  channels=images.shape[1], images=None if stored else images,
                  reader=images if stored else None)


def _generated(params: dict, cache_dir: str | None, cache: DataCache):
    """The generated set (`cached_generate`), once per `cache`."""
    key = (tuple(sorted(params.items())), cache_dir)
    if key not in cache.generated:
        cache.generated[key] = cached_generate(GENERATORS[params["domain"]][0], params, cache_dir)
    return cache.generated[key]


def _real(domain: str, source: str, get, size: int, cache: DataCache, decode: bool = True) -> Source:
    """A real source's data through the cache (`real_cache`): its index, and with `decode` its
    images at `size` px (decoded once)."""
    entry = _real_entry(domain, source, get, size)
    if not decode:
        data = cache.indexed(entry)
        cache.fingerprint(entry, fresh=True)
        return data
    return cache.decoded(entry, size, int(get("num_workers", 0) or 0))


def data_fingerprint(cfg, cache: DataCache | None = None) -> str:
    """`DomainData(cfg, cache).fingerprint()`; "" while the data cannot be read (the up-front checks
    and the study's data read name why)."""
    try:
        return DomainData(cfg, cache).fingerprint()
    except (OSError, ValueError):
        return ""


def _real_entry(domain: str, source: str, get, size: int) -> Entry:
    """The source's cache entry: its identity key, the call that reads it, its root and index files."""
    root = str(get("root", "") or "")
    if not root:
        raise ValueError(f"data.root: required for source {source}")
    root = Path(root).expanduser()
    read, files = _reader(domain, source, get, root, size)
    key = identity(source, root, lambda k, d=None: domain if k == "domain" else get(k, d), files)
    return Entry(key, read, cache_root(get("cache_dir", "")), source, root, tuple(files))


def _reader(domain: str, source: str, get, root: Path, size: int, cap: PixelCap | None = None):
    """(a call that reads and checks the source, the files that index it). Image files are checked
    against `data.max_pixels` (`cap` None: image files above it stop the read with one line that counts
    them, from a second pass over the headers; else that pass, `cap` recording them)."""
    if cap is None:
        limit = int(get("max_pixels", DEFAULT_MAX_PIXELS) or DEFAULT_MAX_PIXELS)
        read, files = _reader(domain, source, get, root, size, PixelCap(limit))

        def counted() -> Source:
            try:
                return read()
            except TooManyPixels as first:
                found: list[str] = []
                try:
                    _reader(domain, source, get, root, size, PixelCap(limit, found))[0]()
                except (ValueError, FileNotFoundError):
                    raise first from None  # another problem stops the count: the first file is named
                raise over_cap_summary(first, found) from None
        return counted, files
    spec = SOURCE_SPECS[source]
    return (lambda: spec.read(root, domain, get, size, cap)), spec.index(root, domain, get, size)
