"""A real data set's content is part of every identity: a data file rewritten in place gives new runs
and the new labels' numbers, a moved, unchanged folder reuses every run, replaced or added image
files give new identities, and synthetic data keeps its generator's identity."""
import hashlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import roc_auc_score

from datamodules import DomainData
from experiments import plan_study, run_study
from experiments.design import identity
from experiments.design.scheduler import Scheduler
from experiments.preflight.facts import study_facts

FAST = ["train.max_epochs=1", "bootstrap_resamples=20", "attacks=[{name: fgsm, eps: [0.02]}]"]


def write_npz(path, flip_test=False):
    """A binary MedMNIST file (breastmnist layout) whose label-1 images are brighter; `flip_test`
    inverts every test label."""
    rng, arrays = np.random.default_rng(0), {}
    for split, count in (("train", 60), ("val", 12), ("test", 24)):
        labels = np.arange(count) % 2
        images = rng.integers(0, 140, (count, 28, 28)) + 80 * labels[:, None, None] * rng.random((count, 1, 1))
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    if flip_test:
        arrays["test_labels"] = 1 - arrays["test_labels"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def write_folder(root, n=48):
    """A CSV + PNG folder (binary, label-1 images brighter)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = np.arange(n) % 2
    for i in range(n):
        pixels = rng.integers(0, 150, (20, 20)) + 90 * labels[i] * rng.random()
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"{i}.png")
    pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": labels}).to_csv(root / "labels.csv", index=False)


def npz_data(path):
    return ["data.source=medmnist", "data.domain=breast", "data.flag=breastmnist", f"data.root={path.parent}",
            "data.image_size=28", "data.val_fraction=0.2"]


def csv_data(root):
    return ["data.source=csv", "data.domain=dermatology", f"data.root={root}", "data.channels=1",
            "data.image_size=16", "data.test_fraction=0.25", "data.val_fraction=0.3"]


def store(root) -> dict:
    """Run ids by kind in the study's store."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=1000)
    return {kind: sorted(r.info.run_id for r in runs if r.data.tags["kind"] == kind) for kind in ("model", "pair")}


def predictions(root, run_id) -> pd.DataFrame:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return pd.read_csv(client.download_artifacts(run_id, "predictions.csv", str(root / "dl" / run_id)))


def work(cfg) -> dict:
    """Every identity of the study: {(kind, what): key}, after reading the data's index (as `run` reads
    the data before it names any work; the read takes the fingerprint)."""
    DomainData(cfg.data).index()
    scheduler = Scheduler(cfg, study_facts(cfg))
    keys = {("model", job.name): job.key for job in scheduler.model_jobs()}
    keys.update({("set", job.surrogate.name): job.key for job in scheduler.set_jobs()})
    keys.update({("pair", p.set.surrogate.name, p.target.name): p.key for p in scheduler.pair_jobs()})
    return keys


def all_new(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(before[k] != after[k] for k in before)


@pytest.mark.slow
def test_a_relabelled_npz_gives_new_runs_and_the_new_labels_auc(tmp_path, smoke_config):
    npz = tmp_path / "data" / "breastmnist.npz"
    write_npz(npz)
    cfg = smoke_config(tmp_path, *npz_data(npz), *FAST)
    first, runs = run_study(cfg).table, store(tmp_path)
    assert (len(runs["model"]), len(runs["pair"])) == (2, 4)
    assert 0.5 < first.auc_clean.min() < 1  # the brighter class scores higher, not perfectly

    write_npz(npz, flip_test=True)  # the same path, every test label inverted
    again = run_study(smoke_config(tmp_path, *npz_data(npz), *FAST)).table
    now = store(tmp_path)
    assert (len(now["model"]), len(now["pair"])) == (4, 8) and set(again.run_id).isdisjoint(first.run_id)
    with np.load(npz) as arrays:
        new_labels = arrays["test_labels"][:, 0]
    for row in again.itertuples():
        table = predictions(tmp_path, row.run_id)
        np.testing.assert_array_equal(table.label, new_labels)  # the test set in the file's order
        assert row.auc_clean == pytest.approx(roc_auc_score(table.label, table.clean), abs=1e-6)  # float32 scores
    # same development data, same seeds: the same models, scored against inverted labels
    np.testing.assert_allclose(again.auc_clean, 1 - first.auc_clean, atol=1e-6)


@pytest.mark.slow
def test_a_moved_folder_reuses_every_run_and_a_fixed_labels_csv_redoes_them(tmp_path, smoke_config):
    here, there = tmp_path / "data", tmp_path / "moved" / "data"
    write_folder(here)
    first, runs = run_study(smoke_config(tmp_path, *csv_data(here), *FAST)).table, store(tmp_path)
    plan = plan_study(smoke_config(tmp_path, *csv_data(here), *FAST)).text
    content = DomainData(smoke_config(tmp_path, *csv_data(here)).data).fingerprint()
    assert f"content {content[:23]} " in plan

    there.parent.mkdir()
    os.rename(here, there)
    moved = run_study(smoke_config(tmp_path, *csv_data(there), *FAST)).table
    assert store(tmp_path) == runs and list(moved.run_id) == list(first.run_id)  # nothing new
    assert moved.auc_clean.tolist() == first.auc_clean.tolist() and moved.auc_adv.tolist() == first.auc_adv.tolist()
    assert DomainData(smoke_config(tmp_path, *csv_data(there)).data).fingerprint() == content

    table = pd.read_csv(there / "labels.csv")
    table["label"] = 1 - table["label"]  # the labels file fixed in place
    table.to_csv(there / "labels.csv", index=False)
    fixed = run_study(smoke_config(tmp_path, *csv_data(there), *FAST)).table
    now = store(tmp_path)
    assert (len(now["model"]), len(now["pair"])) == (4, 8) and set(fixed.run_id).isdisjoint(first.run_id)
    for row in fixed.itertuples():
        scores = predictions(tmp_path, row.run_id)  # `sample`: the row of the labels file
        assert scores.label.tolist() == table.label.iloc[scores["sample"]].tolist()
        assert row.auc_clean == pytest.approx(roc_auc_score(scores.label, scores.clean), abs=1e-6)
    # the MLflow dataset record names the new content
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    record = client.get_run(fixed.run_id.iloc[0]).inputs.dataset_inputs[0].dataset
    content = DomainData(smoke_config(tmp_path, *csv_data(there)).data).fingerprint()
    ids = sorted(table.path.iloc[predictions(tmp_path, fixed.run_id.iloc[0])["sample"]])
    assert record.digest == hashlib.sha256(("\n".join(ids) + f"\ncontent {content}").encode()).hexdigest()[:16]
    assert f'"content": "{content}"' in record.source


def test_replaced_added_or_touched_image_files_give_new_identities(tmp_path, smoke_config):
    root = tmp_path / "data"
    write_folder(root)
    base = work(smoke_config(tmp_path, *csv_data(root)))
    assert work(smoke_config(tmp_path, *csv_data(root))) == base  # unchanged: the same work

    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy2)  # content and times kept
    assert work(smoke_config(tmp_path, *csv_data(copy))) == base

    image = Image.open(root / "3.png")
    Image.fromarray(255 - np.asarray(image)).save(root / "3.png")  # one image replaced, same name
    replaced = work(smoke_config(tmp_path, *csv_data(root)))
    assert all_new(base, replaced)

    stat = os.stat(copy / "5.png")
    os.utime(copy / "5.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: counted as changed
    assert all_new(base, work(smoke_config(tmp_path, *csv_data(copy))))

    for i in (48, 49):  # new files listed in the labels file
        shutil.copy(root / "0.png", root / f"{i}.png")
    table = pd.read_csv(root / "labels.csv")
    pd.concat([table, pd.DataFrame({"path": ["48.png", "49.png"], "label": [0, 1]})]).to_csv(
        root / "labels.csv", index=False)
    assert all_new(replaced, work(smoke_config(tmp_path, *csv_data(root))))


def test_the_npz_counts_by_its_content_and_not_its_location(tmp_path, smoke_config):
    npz = tmp_path / "a" / "breastmnist.npz"
    write_npz(npz)
    base = work(smoke_config(tmp_path, *npz_data(npz)))
    elsewhere = tmp_path / "b" / "breastmnist.npz"
    elsewhere.parent.mkdir()
    shutil.copy(npz, elsewhere)  # new times, same bytes: the index file counts by its sha256
    assert work(smoke_config(tmp_path, *npz_data(elsewhere))) == base
    cfg = smoke_config(tmp_path, *npz_data(npz))
    data = identity.data_identity(cfg, study_facts(cfg))
    assert "root" not in data
    expected = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert data["content"] == DomainData(smoke_config(tmp_path, *npz_data(npz)).data).fingerprint()
    write_npz(npz, flip_test=True)
    assert all_new(base, work(smoke_config(tmp_path, *npz_data(npz))))
    assert hashlib.sha256(npz.read_bytes()).hexdigest() != expected


def test_synthetic_data_keeps_its_generator_identity(tmp_path, smoke_config):
    cfg = smoke_config(tmp_path)
    data = identity.data_identity(cfg, study_facts(cfg))
    assert "content" not in data and data["source"] == "synthetic"
    assert data == {k: v for k, v in dict(cfg.data).items() if k not in identity.SPEED_OPTIONS["data"]}
