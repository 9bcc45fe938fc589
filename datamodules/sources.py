"""What each data source is, as data (one `SourceSpec` a source, in the manner of `medmnist.INFO`): the
domains it holds, its reader, the `data` keys that decide its data, the files that index it and its
channel rule. The data's cache key, its MLflow dataset record, the plan and the up-front key checks all
read this table."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from lightning_modules.tasks import TASKS

from .readers import chestxray14, kaggle_dr
from .readers.chestxray14 import read_chestxray14
from .readers.csv_folder import read_csv_folder
from .readers.dicom import read_dicom_folder
from .readers.images import ImageFileReader, PixelCap, check_image
from .readers.kaggle_dr import read_kaggle_dr
from .readers.medmnist_npz import DEFAULT_FLAG, FLAGS, ORDINAL_THRESHOLD, file_size, npz_path, read_medmnist
from .readers.pcam import SPLITS as PCAM_SPLITS
from .readers.pcam import pcam_file, read_pcam
from .readers.source import Source

DOMAINS = ("ophthalmology", "radiology", "pathology")  # the synthetic generators' domains
DOMAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# the `data` keys that decide every source's data (`SourceSpec.keys` adds each source's own)
COMMON_KEYS = ("source", "domain", "image_size", "seed", "test_fraction", "val_fraction", "splits")
TABLE_KEYS = ("csv_file", "path_column", "label_column", "patient_column", "task", "channels", "labels")
Get = Callable  # `get(key, default=None)`: a `data` setting


@dataclass(frozen=True)
class SourceSpec:
    """One data source. `domains`: the domains it holds (None: any domain named by one word);
    `keys`: the `data` keys besides `COMMON_KEYS` that decide its data; `checked`: keys it reads only
    to refuse bad input (they change no image); `table`: the index table its reader starts from,
    relative to `root` (None: none); `index`: (root, domain, get, size) -> the files that index it;
    `read`: (root, domain, get, size, cap) -> its `Source`; `channels`: (domain, get) -> its images'
    channels, None where its files tell."""
    name: str
    domains: tuple[str, ...] | None
    keys: tuple[str, ...]
    checked: tuple[str, ...] = ()
    table: Callable[[Get], str] | None = None
    index: Callable[..., list[Path]] = lambda root, domain, get, size: []
    read: Callable[..., Source] | None = None
    channels: Callable[[str, Get], int | None] = lambda domain, get: None

    @property
    def real(self) -> bool:
        """Read from files under `data.root` (not generated)."""
        return "root" in self.keys

    @property
    def reader_keys(self) -> tuple[str, ...]:
        """The keys its reader reads besides root and image size (the cache key holds them)."""
        return tuple(key for key in self.keys if key != "root")


def channels(source: str, domain: str, get: Get = lambda key, default=None: default) -> int | None:
    """The channel rule, the one place it is written: how many channels `source`'s images of `domain`
    have (None where the files tell: PCam, MedMNIST, ChestX-ray14, Kaggle DR)."""
    return SOURCE_SPECS[source].channels(domain, get)


def _grey_for_radiology(domain: str, get: Get) -> int:
    return 1 if domain == "radiology" else 3


def _table_channels(source: str, domain: str, get: Get) -> int:
    """csv, dicom: `data.channels`, else 1 for radiology and DICOM files, 3 otherwise."""
    return int(get("channels", 0) or 0) or (1 if domain == "radiology" or source == "dicom" else 3)


def medmnist_flag(domain: str, get: Get) -> str:
    """`data.flag`, or the synthetic domain's counterpart when it is empty."""
    flag = str(get("flag", "") or DEFAULT_FLAG.get(domain, ""))
    if not flag:
        raise ValueError(f"data.flag: required for source medmnist with domain {domain!r}; valid: {', '.join(FLAGS)}")
    return flag


def _medmnist_files(root: Path, domain: str, get: Get, size: int) -> tuple[str, int, Path]:
    flag = medmnist_flag(domain, get)
    npz_size = int(get("npz_size", 0) or 0) or file_size(flag, size)
    return flag, npz_size, npz_path(root, flag, npz_size)


def _read_medmnist(root: Path, domain: str, get: Get, size: int, cap: PixelCap) -> Source:
    flag, npz_size, _ = _medmnist_files(root, domain, get, size)
    return read_medmnist(root, flag, npz_size, size, int(get("ordinal_threshold", ORDINAL_THRESHOLD)))


def _csv_file(get: Get) -> str:
    return str(get("csv_file", "") or "labels.csv")


def _table_arguments(source: str, root: Path, domain: str, get: Get, size: int) -> tuple:
    """The arguments of the csv and dicom readers, checked."""
    count = _table_channels(source, domain, get)
    if count not in (1, 3):
        raise ValueError(f"data.channels: {count}; image files are read as 1 (grey) or 3 (RGB) channels")
    task = str(get("task", "") or "binary")
    if task not in TASKS:
        raise ValueError(f"data.task: unknown task {task!r}; valid: {', '.join(TASKS)}")
    return (root, size, _csv_file(get), count, task, list(get("labels", None) or []),
            str(get("path_column", "") or "path"), str(get("label_column", "") or "label"),
            str(get("patient_column", "") or ""))


def _read_csv(root: Path, domain: str, get: Get, size: int, cap: PixelCap) -> Source:
    return read_csv_folder(*_table_arguments("csv", root, domain, get, size),
                           check=partial(check_image, cap=cap), reader=partial(ImageFileReader, max_pixels=cap.limit))


def _read_dicom(root: Path, domain: str, get: Get, size: int, cap: PixelCap) -> Source:
    return read_dicom_folder(*_table_arguments("dicom", root, domain, get, size), cap=cap)


def _table_index(source: str, root: Path, domain: str, get: Get, size: int) -> list[Path]:
    """The label table (its reader's arguments checked first)."""
    _table_arguments(source, root, domain, get, size)
    return [root / _csv_file(get)]


SOURCE_SPECS: dict[str, SourceSpec] = {spec.name: spec for spec in (
    SourceSpec("synthetic", DOMAINS, ("num_patients", "images_per_patient", "signal"), channels=_grey_for_radiology),
    SourceSpec("pcam", ("pathology",), ("root",), read=lambda root, domain, get, size, cap: read_pcam(root, size),
               index=lambda root, domain, get, size: [pcam_file(root, s, k) for s in PCAM_SPLITS for k in ("x", "y")]),
    SourceSpec("chestxray14", ("radiology",), ("root",), ("max_pixels",), table=lambda get: chestxray14.CSV_NAME,
               index=lambda root, domain, get, size: [root / chestxray14.CSV_NAME],
               read=lambda root, domain, get, size, cap: read_chestxray14(root, size, cap)),
    SourceSpec("kaggle_dr", ("ophthalmology",), ("root",), ("max_pixels",), table=lambda get: kaggle_dr.CSV_NAME,
               index=lambda root, domain, get, size: [root / kaggle_dr.CSV_NAME],
               read=lambda root, domain, get, size, cap: read_kaggle_dr(root, size, cap)),
    SourceSpec("medmnist", None, ("root", "flag", "npz_size", "ordinal_threshold"), ("labels",),
               index=lambda root, domain, get, size: [_medmnist_files(root, domain, get, size)[2]],
               read=_read_medmnist),
    SourceSpec("csv", None, ("root", *TABLE_KEYS), ("max_pixels",), table=_csv_file,
               index=partial(_table_index, "csv"), read=_read_csv, channels=partial(_table_channels, "csv")),
    SourceSpec("dicom", None, ("root", *TABLE_KEYS), ("max_pixels",), table=_csv_file,
               index=partial(_table_index, "dicom"), read=_read_dicom, channels=partial(_table_channels, "dicom")),
)}
SOURCES = tuple(SOURCE_SPECS)


def domain_problem(domain: str, source: str) -> str:
    """"" when `domain` and `source` go together: a synthetic domain has a generator; a real source
    names any domain (one word), except the sources that hold one domain's data."""
    if source not in SOURCE_SPECS:
        return f"data.source: unknown source {source!r}; valid: {', '.join(SOURCES)}"
    domains = SOURCE_SPECS[source].domains
    if source == "synthetic" and domain not in domains:
        return (f"data.domain: unknown synthetic domain {domain!r}; valid: {', '.join(DOMAINS)} "
                "(real sources name any domain)")
    if not DOMAIN_NAME.fullmatch(str(domain)):
        return f"data.domain: {domain!r}; a domain is named by letters, digits, '_', '-' or '.'"
    if domains is not None and domain not in domains:
        return f"data.source: {source} holds {domains[0]} data, not {domain}"
    return ""


def deciding_keys(source: str) -> tuple[str, ...]:
    """Every `data` key that decides `source`'s data (what its dataset record holds)."""
    return COMMON_KEYS + SOURCE_SPECS[source].keys


def read_by(key: str) -> tuple[str, ...]:
    """The real sources that read `key` (those it decides the data of, then those that only check it)."""
    real = [spec for spec in SOURCE_SPECS.values() if spec.real]
    return (tuple(spec.name for spec in real if key in spec.keys)
            + tuple(spec.name for spec in real if key in spec.checked and key not in spec.keys))


def real_source_keys() -> tuple[str, ...]:
    """The keys the real sources read, deciding keys first (each once, in table order)."""
    real = [spec for spec in SOURCE_SPECS.values() if spec.real]
    found = [key for spec in real for key in spec.keys] + [key for spec in real for key in spec.checked]
    return tuple(dict.fromkeys(found))
