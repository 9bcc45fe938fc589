"""Which `data` keys each source and task reads: a key set for data that does not read it is refused
(one line naming the key and why) rather than ignored; label lists are checked against the
source's class order, so a list that would flip a binary task never runs."""
from __future__ import annotations

import medmnist
from omegaconf import DictConfig, OmegaConf

from datamodules.readers.csv_folder import binary_positive
from datamodules.readers.medmnist_npz import DEFAULT_FLAG, FLAGS
from datamodules.sources import read_by, real_source_keys

ORDINAL_FLAGS = tuple(f for f in FLAGS if medmnist.INFO[f]["task"] == "ordinal-regression")
# key -> the real sources that read it (the synthetic source reads every key they do not)
READ_BY = {key: read_by(key) for key in real_source_keys()}


def data_key_problem(data: DictConfig, defaults) -> str:
    """The first key of `data` that its source or task does not read but is set away from its
    default (`defaults`: the schema's `DataConfig()`), or a label list at odds with the data; ""."""
    source = data.source
    for key, sources in READ_BY.items():
        if source not in sources and _value(data, key) != getattr(defaults, key):
            return (f"data.{key}: {_value(data, key)!r} is read by source {' or '.join(sources)} only, not "
                    f"{source}; leave it out")
    labels = [str(name) for name in _value(data, "labels")]
    if len(set(labels)) != len(labels):
        return f"data.labels: {labels} names a label twice"
    if source == "medmnist":
        return _medmnist_problem(data, labels, defaults)
    if source in ("csv", "dicom") and data.task == "binary":
        try:
            binary_positive(labels, str(data.label_column))
        except ValueError as err:
            return str(err)
    return ""


def _medmnist_problem(data: DictConfig, labels: list[str], defaults) -> str:
    """`ordinal_threshold` only on ordinal sets; `labels`, when given, exactly the flag's class order
    of `medmnist.INFO` (its positive class of a binary set is class 1)."""
    flag = str(data.flag or DEFAULT_FLAG.get(str(data.domain), ""))
    info = medmnist.INFO.get(flag)
    if info is None:  # unknown or missing flags are named when the data is read
        return ""
    if info["task"] != "ordinal-regression" and data.ordinal_threshold != defaults.ordinal_threshold:
        return (f"data.ordinal_threshold: {data.ordinal_threshold}; {flag} is {info['task']}, not an ordinal "
                f"grading ({', '.join(ORDINAL_FLAGS)}): the threshold does not apply")
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    if not labels or labels == names:
        return ""
    line = f"data.labels: {labels} is not {flag}'s class order {names} (medmnist.INFO)"
    if info["task"] == "binary-class":
        flips = sorted(labels) == sorted(names)
        line += f"; its positive class is class 1, {names[1]!r}" + ("; this order would flip the task" * flips)
    return line


def _value(data: DictConfig, key: str):
    value = data[key]
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
