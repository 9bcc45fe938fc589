"""The source table (`datamodules.sources`): every `data` key that decides a CSV reading is in its MLflow
dataset record, and the channel rule gives one answer wherever channels are counted."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datamodules import DomainData
from datamodules.sources import DOMAINS, SOURCE_SPECS, channels
from experiments import load_config
from experiments.preflight.outline import data_outline
from experiments.store.datasets import split_dataset


def write_folder(root, n=24):
    """Grey PNGs whose table names each file twice (`path`, `file`) and each label twice (`label`, `y`)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12)).astype(np.uint8)).save(root / f"{i}.png")
    labels = np.arange(n) % 2
    paths = [f"{i}.png" for i in range(n)]
    pd.DataFrame({"path": paths, "file": paths, "label": labels, "y": labels,
                  "patient": [f"p{i // 2}" for i in range(n)]}).to_csv(root / "labels.csv", index=False)
    return root


def csv_config(tmp_path, *more):
    return load_config("smoke", ["data.source=csv", "data.domain=dermatology", f"data.root={tmp_path / 'csv'}",
                                 "data.image_size=8", "data.test_fraction=0.25", "data.val_fraction=0.25",
                                 f"data.cache_dir={tmp_path / 'cache'}", *more])


def record(cfg) -> dict:
    """The test set's dataset record: its source settings, name and digest."""
    module = DomainData(cfg.data).datamodule("d1")
    module.setup()
    dataset = split_dataset(cfg.data, module, "test")
    return {**dataset.source.to_dict(), "name": dataset.name, "digest": dataset.digest}


@pytest.mark.parametrize("override", ["data.label_column=y", "data.path_column=file", "data.labels=[benign, tumour]",
                                      "data.channels=3", "data.task=multiclass", "data.patient_column=patient"])
def test_csv_readings_that_differ_in_one_key_have_different_dataset_records(tmp_path, override):
    write_folder(tmp_path / "csv")
    both = ["data.labels=['0', '1']"] if "task" in override else []  # a multiclass task names its labels
    base, other = record(csv_config(tmp_path, *both)), record(csv_config(tmp_path, *both, override))
    key = override.removeprefix("data.").split("=")[0]
    assert base[key] != other[key]
    changed = {k for k in base if base[k] != other[k]} - {"digest"}  # patients change the split, so its ids
    assert changed == {key}
    assert other[key] == csv_config(tmp_path, *both, override).data[key]


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_channel_rule_is_the_synthetic_generators_and_the_plans(tmp_path, domain):
    cfg = load_config("smoke", [f"data.domain={domain}", "data.num_patients=12", "data.image_size=8",
                                f"data.cache_dir={tmp_path}"])
    outline, _ = data_outline(cfg.data, {"d1"})
    assert channels("synthetic", domain) == DomainData(cfg.data).channels == outline.channels


@pytest.mark.parametrize("more", [[], ["data.channels=3"], ["data.domain=radiology"], ["data.domain=radiology",
                                                                                     "data.channels=3"]])
def test_the_channel_rule_is_the_csv_readers_and_the_plans(tmp_path, more):
    write_folder(tmp_path / "csv", n=80)
    cfg = csv_config(tmp_path, *more)
    outline, problems = data_outline(cfg.data, {"d1"})
    rule = channels("csv", cfg.data.domain, cfg.data.get)
    assert not problems and rule == DomainData(cfg.data).channels == outline.channels
    assert rule == (3 if "data.channels=3" in more or "data.domain=radiology" not in more else 1)


def test_dicom_files_are_grey_unless_asked_and_files_tell_the_rest():
    no_key = {"channels": 0}.get
    assert [channels("dicom", d, no_key) for d in ("radiology", "skin")] == [1, 1]
    assert channels("dicom", "skin", {"channels": 3}.get) == 3
    assert [channels(s, "pathology") for s in SOURCE_SPECS if SOURCE_SPECS[s].real and s not in ("csv", "dicom")] \
        == [None] * 4
