"""A study reads and checks each data source once, however many models it trains; a stored model is
loaded without touching the images."""
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

import datamodules.sources
import datamodules.readers.chestxray14 as chestxray14
from datamodules import DomainData
from experiments import load_config, run_study
from experiments.execution.training import train_model
from experiments.preflight.facts import study_facts

FINDINGS = ["Effusion", "Mass", "Nodule"]


def chestxray14_folder(root, patients: int = 40, per_patient: int = 2) -> int:
    """A ChestX-ray14-layout folder (Data_Entry_2017.csv, PNGs in images_00N/images/); returns the
    number of images. Effusion images are brighter, so models can learn something."""
    rng, rows = np.random.default_rng(0), []
    for patient in range(patients):
        for k in range(per_patient):
            name = f"{patient:08d}_{k:03d}.png"
            findings = [f for f in FINDINGS if rng.random() < 0.4] or ["No Finding"]
            pixels = rng.integers(0, 120, (24, 24)) + (100 if "Effusion" in findings else 0)
            path = root / f"images_{patient % 2 + 1:03d}" / "images" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)
            rows.append({"Image Index": name, "Finding Labels": "|".join(findings), "Patient ID": patient})
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    return len(rows)


class Counted:
    """Wraps a function and counts its calls (the real function still runs)."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.mark.slow
def test_three_models_over_chestxray14_read_and_check_the_folder_once(tmp_path, monkeypatch):
    images = chestxray14_folder(tmp_path / "nih")
    reads = Counted(datamodules.sources.read_chestxray14)
    checks = Counted(chestxray14.check_image)
    monkeypatch.setattr(datamodules.sources, "read_chestxray14", reads)
    monkeypatch.setattr(chestxray14, "check_image", checks)
    cfg = load_config(None, [
        "name=read-once", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'out'}",
        "data.domain=radiology", "data.source=chestxray14", f"data.root={tmp_path / 'nih'}", "data.image_size=16",
        "data.test_fraction=0.3", "data.batch_size=16", "train.max_epochs=1", "bootstrap_resamples=0",
        "models=[{name: a, dev_set: d1}, {name: b, dev_set: d2}, {name: c, dev_set: d1, instance: 1}]",
        "pairs=whitebox", "attacks=[{name: fgsm, eps: [0.02]}]"])
    table = run_study(cfg).table
    assert sorted(table.target) == ["a", "b", "c"]
    assert reads.calls == 1  # one index of the folder for three models and the test set
    assert checks.calls == images  # each image file checked once

    # the stored models come back from their runs alone: with the images gone, nothing fails
    for path in (tmp_path / "nih").rglob("*.png"):
        path.unlink()
    data = DomainData(OmegaConf.to_container(cfg.data, resolve=True))  # read only when used
    for model in cfg.models:
        assert not train_model(cfg, model, data, study_facts(cfg, data.cache)).module.training
    assert reads.calls == 1  # `data` was never read
