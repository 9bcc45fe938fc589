"""Development splits read from files (`data.splits`) instead of drawn: the paper authors' four YAML
files or one CSV of `sample_id,split`, checked against the data and turned into the split manifest.

- A folder with `d0_filenames.yml` .. `d3_filenames.yml` (keys `trainIDs`, `valIDs`, `testIDs`, each a
  list of image ids; d0 is the paper's d1/10, d1 is d1, d2 is d2, d3 is d2/2). Every scalar is read as
  a string, so an id such as `00008866_000` stays text where YAML 1.1 would read a number.
- A CSV with columns `sample_id`, `split`; split is `test` or `<dev set>_<train|val>`
  (`d1_train`, `d1/10_val`, `d2/2_train`, ...); a sample may be listed once per development set.

An id names a sample by its id in the data or by that id without its file suffix (`x.png` -> `x`).
Rules: every id is in the data; no id twice in one list; the test set shares no id with any
development set; d1 and d2 share none; train and val of a set share none; d1/10 lies within d1 and
d2/2 within d2 (stage by stage); the four YAML files share one test set; and, by the data's patient
ids, no patient is in two lists that must share no id (patient-level splits, as the paper's).
Samples in no list are left out of the study.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .fingerprint import sha256_file
from .splits import DEV_SETS

AUTHOR_FILES = {"d1/10": "d0_filenames.yml", "d1": "d1_filenames.yml", "d2": "d2_filenames.yml",
                "d2/2": "d3_filenames.yml"}
YAML_KEYS = {"train": "trainIDs", "val": "valIDs", "test": "testIDs"}
CSV_SPLITS = ("test",) + tuple(f"{dev}_{stage}" for dev in DEV_SETS for stage in ("train", "val"))
# (smaller set, the set it lies within)
NESTED = (("d1/10", "d1"), ("d2/2", "d2"))


def splits_sha256(path: Path) -> str:
    """A file's sha256; a folder's is the sha256 of its split files' `<name> <sha256>` lines."""
    if path.is_dir():
        lines = "".join(f"{name} {splits_sha256(path / name)}\n" for name in AUTHOR_FILES.values())
        return hashlib.sha256(lines.encode()).hexdigest()
    return sha256_file(path)


def read_split_lists(path: str | Path) -> tuple[dict[tuple[str, str], tuple[list[str], Path]], str]:
    """{(dev set or "test", stage): (ids, file they came from)} and the sha256 of `path`."""
    path = Path(path).expanduser()
    if path.is_dir():
        lists = _author_lists(path)
    elif path.is_file():
        lists = _csv_lists(path)
    else:
        raise FileNotFoundError(f"{path}: split file or folder not found (data.splits)")
    return lists, splits_sha256(path)


def _author_lists(folder: Path) -> dict:
    lists, test = {}, None
    for dev_set, name in AUTHOR_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: split file not found (data.splits holds the four files "
                                    f"{', '.join(AUTHOR_FILES.values())})")
        try:
            content = yaml.load(path.read_bytes(), Loader=yaml.BaseLoader)  # every scalar a string
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: unreadable YAML ({' '.join(str(err).split())[:100]})") from None
        for stage, key in YAML_KEYS.items():
            ids = content.get(key) if isinstance(content, dict) else None
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"{path}: key {key!r} must be a list of image ids")
            if stage == "test":
                if test is not None and set(ids) != set(test[0]):
                    raise ValueError(f"{path}: testIDs differ from those of {test[1]} (rule: the four files "
                                     "share one test set)")
                test = test or (ids, path)
            else:
                lists[dev_set, stage] = (ids, path)
    lists["test", "test"] = test
    return lists


def _csv_lists(path: Path) -> dict:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise ValueError(f"{path}: unreadable CSV ({' '.join(str(err).split())[:120]})") from None
    for column in ("sample_id", "split"):
        if column not in table.columns:
            raise ValueError(f"{path}: required column {column!r} missing (columns: {', '.join(table.columns)})")
    lists: dict = {}
    for i, (sample, split) in enumerate(zip(table["sample_id"], table["split"])):
        if split not in CSV_SPLITS:
            raise ValueError(f"{path}, line {i + 2}: unknown split {split!r}; valid: {', '.join(CSV_SPLITS)}")
        key = ("test", "test") if split == "test" else tuple(split.rsplit("_", 1))
        lists.setdefault(key, ([], path))[0].append(sample)
    return lists


def file_manifest(path: str | Path, sample_ids, patient_ids) -> pd.DataFrame:
    """The split manifest (columns as `splits.split_manifest`'s, plus `split_source` and
    `split_sha256`) of the splits the files at `path` give, after checking every rule."""
    lists, digest = read_split_lists(path)
    sample_ids = np.asarray(sample_ids).astype(str)
    lookup = _id_lookup(sample_ids)
    members: dict[tuple[str, str], np.ndarray] = {}
    for (dev_set, stage), (ids, where) in lists.items():
        label = "test" if dev_set == "test" else f"{dev_set} {stage}"
        seen: set[str] = set()
        rows = []
        for sample in ids:
            if sample in seen:
                raise ValueError(f"{where}: id {sample!r} is listed twice in {label}")
            seen.add(sample)
            if sample not in lookup:
                raise ValueError(f"{where}: id {sample!r} ({label}) is not in the data (rule: every id exists)")
            rows.append(lookup[sample])
        members[dev_set, stage] = np.asarray(rows, dtype=np.int64)
    _check_rules(members, lists, np.asarray(patient_ids).astype(str), Path(path).expanduser())
    n = len(sample_ids)
    partition, stage_of = np.full(n, "none", dtype=object), np.full(n, "none", dtype=object)
    half, tenth = np.zeros(n, bool), np.zeros(n, bool)
    for (dev_set, stage), rows in members.items():
        if dev_set in ("test", "d1", "d2"):
            partition[rows], stage_of[rows] = dev_set, stage
    for (dev_set, stage), rows in members.items():
        if dev_set in ("d1/10", "d2/2"):
            (tenth if dev_set == "d1/10" else half)[rows] = True
    table = pd.DataFrame({"sample_id": np.asarray(sample_ids), "patient_id": np.asarray(patient_ids),
                          "partition": partition, "stage": stage_of, "in_d2_half": half, "in_d1_tenth": tenth,
                          "split_source": str(Path(path).expanduser().resolve()), "split_sha256": digest})
    table.index.name = "sample"
    return table


def _id_lookup(sample_ids: np.ndarray) -> dict[str, int]:
    """id -> row, by the data's ids and, where unambiguous, by those ids without a file suffix."""
    lookup: dict[str, int] = {}
    stems: dict[str, list[int]] = {}
    for i, sample in enumerate(sample_ids):
        lookup[sample] = i
        stem, dot, suffix = sample.rpartition(".")
        if dot and stem and "/" not in suffix:
            stems.setdefault(stem, []).append(i)
    for stem, rows in stems.items():
        if len(rows) == 1:
            lookup.setdefault(stem, rows[0])
    return lookup


def _check_rules(members: dict, lists: dict, patients: np.ndarray, source: Path) -> None:
    """Raise the first broken rule (see the module), naming the id as the file lists it (and the
    patient, where two lists share a patient but no id)."""
    listed = {key: dict(zip(members[key].tolist(), lists[key][0])) for key in members}

    def where(key) -> Path:
        return lists[key][1]

    def name(key) -> str:
        return "test" if key[0] == "test" else f"{key[0]} {key[1]}"

    def overlap(a, b, rule: str) -> None:
        if a in members and b in members:
            common = np.intersect1d(members[a], members[b])
            if len(common):
                raise ValueError(f"{where(b)}: id {listed[b][common[0]]!r} is in {name(a)} and in {name(b)} "
                                 f"(rule: {rule})")
            shared = np.intersect1d(patients[members[a]], patients[members[b]])
            if len(shared):
                in_a = listed[a][members[a][patients[members[a]] == shared[0]][0]]
                in_b = listed[b][members[b][patients[members[b]] == shared[0]][0]]
                raise ValueError(f"{where(b)}: patient {str(shared[0])!r} is in {name(a)} (id {in_a!r}) and in "
                                 f"{name(b)} (id {in_b!r}) (rule: {name(a)} and {name(b)} share no patient)")

    dev = [k for k in members if k[0] != "test"]
    for key in dev:
        overlap(("test", "test"), key, "the test set shares no id with a development set")
    for small, large in NESTED:
        for stage in ("train", "val"):
            if (small, stage) in members:
                outside = np.setdiff1d(members[small, stage], members.get((large, stage), np.empty(0, np.int64)))
                if len(outside):
                    raise ValueError(f"{where((small, stage))}: id {listed[small, stage][outside[0]]!r} is in {small} "
                                     f"{stage} but not in {large} {stage} (rule: {small} lies within {large})")
    for a in [k for k in dev if k[0] in ("d1", "d1/10")]:
        for b in [k for k in dev if k[0] in ("d2", "d2/2")]:
            overlap(a, b, "d1 and d2 share no id")
    for dev_set in DEV_SETS:
        overlap((dev_set, "train"), (dev_set, "val"), f"{dev_set}'s train and val share no id")
    if ("test", "test") not in members or not len(members["test", "test"]):
        first = next(iter(lists.values()), None)  # a CSV of no rows lists nothing
        raise ValueError(f"{first[1] if first else source}: no test ids (rule: a test set is given)")
