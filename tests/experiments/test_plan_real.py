"""`plan` and the up-front checks see a real source: its flag, files and splits, and its exact split
sizes; a small study runs end to end on the real PneumoniaMNIST images."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from experiments import plan_study, run_study
from experiments.execution import read_data
from experiments.preflight.outline import outline
from experiments.preflight.checks import StudyProblems, require_ready

REAL = os.environ.get("MEDTRANSFER_REAL_DATA", "")


def write_breast(root, n=(30, 10, 12)):
    root.mkdir(parents=True, exist_ok=True)
    rng, arrays = np.random.default_rng(0), {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(root / "breastmnist.npz", **arrays)
    return root


def medmnist(root, flag, *more):
    return ["data.source=medmnist", "data.domain=breast", f"data.flag={flag}", f"data.root={root}",
            "data.image_size=28", "data.val_fraction=0.2", *more]


def test_plan_names_a_bad_flag_and_gives_exact_split_sizes(tmp_path, smoke_config):
    root = write_breast(tmp_path / "data")
    plan = plan_study(smoke_config(tmp_path, *medmnist(root, "breastmnistt"), store=False))
    assert any("data.flag: unknown MedMNIST flag 'breastmnistt'" in p for p in plan.problems)
    with pytest.raises(StudyProblems, match="data.flag: unknown MedMNIST flag"):
        require_ready(smoke_config(tmp_path, *medmnist(root, "breastmnistt"), store=False))
    plan = plan_study(smoke_config(tmp_path, *medmnist(root, "breastmnist"), store=False))
    assert plan.problems == []
    # official test split = the test set (12); the 40 others split in halves, 20 % of each for validation
    assert "52 images at 1x28x28; test 12, train+val d1 16+4, d2 16+4" in plan.text
    assert not (tmp_path / "mlflow.db").exists()  # a plan writes no store


def test_plan_times_decoding_until_the_images_are_in_the_cache(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, *medmnist(write_breast(tmp_path / "data"), "breastmnist"))
    data, = (domain.data for domain in outline(cfg))
    assert data.decode_seconds > 0 and not data.decode_each_read
    assert "decoding them at 28 px: about" in plan_study(cfg).text
    read_data(cfg)  # decodes the images into the cache
    data, = (domain.data for domain in outline(cfg))
    assert data.decode_seconds == 0
    assert "decoded at 28 px in the cache" in plan_study(cfg).text
    uncached = smoke_config(tmp_path, *medmnist(tmp_path / "data", "breastmnist"), "data.cache_dir=none")
    data, = (domain.data for domain in outline(uncached))
    assert data.decode_seconds > 0 and data.decode_each_read  # every read decodes


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason="MEDTRANSFER_REAL_DATA is not set (the folder holding pneumoniamnist.npz)")
def test_small_study_end_to_end_on_real_pneumoniamnist(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path, *medmnist(REAL, "pneumoniamnist"), "data.domain=chest", "train.max_epochs=1",
                       "bootstrap_resamples=50", "attacks=[{name: fgsm, eps: [0.02]}]")
    plan = plan_study(cfg)
    assert "5030 images at 1x28x28; test 624" in plan.text and plan.problems == []
    table = run_study(cfg).table
    assert len(table) == 4 and set(table["target"]) == {"a", "b"}
    with np.load(Path(REAL) / "pneumoniamnist.npz") as npz:
        test_labels = npz["test_labels"].ravel()
    # the file's own test split is what every pair scored: each sample's label is the file's label of
    # that test image, and the reported clean AUC is sklearn's on the stored scores
    for row in table.itertuples():
        path = MlflowClient(cfg.tracking.uri).download_artifacts(row.run_id, "predictions.csv", str(tmp_path))
        frame = pd.read_csv(path)
        index = frame["sample"].to_numpy() - (5030 - len(test_labels))  # the test split follows train and val
        assert sorted(index) == list(range(len(test_labels)))
        assert (frame["label"].to_numpy() == test_labels[index]).all()
        assert roc_auc_score(frame["label"], frame["clean"]) == pytest.approx(row.auc_clean, abs=1e-6)  # float32 AUC
    # one epoch on real chest X-rays: each target is above chance on its clean test images
    assert (table.groupby("target")["auc_clean"].first() > 0.6).all()
    assert "target_at_chance" in table and not table["target_at_chance"].any()
