"""Every 2-D MedMNIST+ data set read from files in the official layout, and the real PneumoniaMNIST
file when `MEDTRANSFER_REAL_DATA` names its folder."""
import os
from pathlib import Path

import numpy as np
import pytest

from datamodules import build_datamodule
from datamodules.base import ReaderDataset

# What the MedMNIST v2 paper (Yang et al. 2023, Table 1) says each 2-D set is: task as medtransfer
# trains it (ordinal RetinaMNIST as binary grade >= 2), outputs, channels, classes in the file.
PAPER = {
    "pathmnist": ("multiclass", 9, 3, 9), "chestmnist": ("multilabel", 14, 1, 14),
    "dermamnist": ("multiclass", 7, 3, 7), "octmnist": ("multiclass", 4, 1, 4),
    "pneumoniamnist": ("binary", 1, 1, 2), "retinamnist": ("binary", 1, 3, 5),
    "breastmnist": ("binary", 1, 1, 2), "bloodmnist": ("multiclass", 8, 3, 8),
    "tissuemnist": ("multiclass", 8, 1, 8), "organamnist": ("multiclass", 11, 1, 11),
    "organcmnist": ("multiclass", 11, 1, 11), "organsmnist": ("multiclass", 11, 1, 11),
}
REAL = os.environ.get("MEDTRANSFER_REAL_DATA", "")


def write_npz(root: Path, flag: str, size: int, channels: int, classes: int, multilabel: bool,
              n=(12, 5, 7), seed=0) -> dict:
    """A file in MedMNIST's own layout: `<split>_images` uint8 NHW(C), `<split>_labels` (n, 1) or (n, L)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) + ((3,) if channels == 3 else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.integers(0, 2, (count, classes)) if multilabel
                                     else rng.integers(0, classes, (count, 1))).astype(np.uint8)
    np.savez(root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"), **arrays)
    return arrays


def cfg(root, flag, size=16, **extra):
    return dict(domain="anything", source="medmnist", flag=flag, root=str(root), image_size=size, seed=0,
                batch_size=4, test_fraction=0.2, val_fraction=0.2, cache_dir="none", **extra)


@pytest.mark.parametrize("flag", sorted(PAPER))
def test_every_2d_flag_reads_with_its_papers_task_labels_and_channels(flag, tmp_path):
    task, outputs, channels, classes = PAPER[flag]
    arrays = write_npz(tmp_path, flag, 28, channels, classes, task == "multilabel")
    data = build_datamodule(cfg(tmp_path, flag))
    assert (data.task, data.num_outputs, data.channels) == (task, outputs, channels)
    raw = np.concatenate([arrays[f"{s}_labels"] for s in ("train", "val", "test")]).astype(int)
    expected = raw if task == "multilabel" else (raw[:, 0] >= 2 if flag == "retinamnist" else raw[:, 0])
    np.testing.assert_array_equal(data.labels.numpy(), expected)
    # the official test split is the shared test set, whatever the seed
    assert list(data.manifest.iloc[data.indices["test"]]["sample_id"]) == [f"test:{i}" for i in range(7)]
    image, _ = ReaderDataset(data.reader, data.labels, np.arange(1))[0]
    assert image.shape == (channels, 16, 16)


@pytest.mark.parametrize("size", [28, 64, 128, 224])
def test_each_file_size_is_found_by_its_official_name(size, tmp_path):
    arrays = write_npz(tmp_path, "breastmnist", size, 1, 2, False, n=(3, 2, 2))
    data = build_datamodule(cfg(tmp_path, "breastmnist", size=size))
    image, _ = ReaderDataset(data.reader, data.labels, np.arange(1))[0]
    np.testing.assert_array_equal((image[0].numpy() * 255).round(), arrays["train_images"][0])
    assert data.label_names == ["normal, benign"]  # INFO's label 1, the positive class


def test_ordinal_threshold_is_a_data_key_and_checked(tmp_path):
    arrays = write_npz(tmp_path, "retinamnist", 28, 3, 5, False)
    grades = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    data = build_datamodule(cfg(tmp_path, "retinamnist", ordinal_threshold=3))
    np.testing.assert_array_equal(data.labels.numpy(), grades >= 3)
    with pytest.raises(ValueError, match=r"data.ordinal_threshold: 5; retinamnist grades run 0..4"):
        build_datamodule(cfg(tmp_path, "retinamnist", ordinal_threshold=5))


def test_flag_errors_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"data.flag: unknown MedMNIST flag 'organmnist3d'; valid: pathmnist, "):
        build_datamodule(cfg(tmp_path, "organmnist3d"))
    with pytest.raises(ValueError, match=r"data.npz_size: octmnist comes in sizes \[28, 64, 128, 224\], not 32"):
        build_datamodule(cfg(tmp_path, "octmnist", npz_size=32))
    with pytest.raises(ValueError, match=r"data.flag: required for source medmnist with domain 'anything'"):
        build_datamodule(cfg(tmp_path, ""))
    write_npz(tmp_path, "dermamnist", 28, 1, 7, False)  # DermaMNIST is RGB
    with pytest.raises(ValueError, match=r"dermamnist.npz: train_images: medmnist.INFO gives 3 channel"):
        build_datamodule(cfg(tmp_path, "dermamnist"))


@pytest.mark.skipif(not REAL, reason="MEDTRANSFER_REAL_DATA is not set (the folder holding pneumoniamnist.npz)")
def test_real_pneumoniamnist_file():
    path = Path(REAL) / "pneumoniamnist.npz"
    with np.load(path) as npz:
        truth = {s: (npz[f"{s}_images"][:], npz[f"{s}_labels"][:, 0]) for s in ("train", "val", "test")}
    data = build_datamodule(cfg(REAL, "pneumoniamnist", size=28))
    assert (data.task, data.channels, data.label_names) == ("binary", 1, ["pneumonia"])
    np.testing.assert_array_equal(data.labels.numpy(), np.concatenate([truth[s][1] for s in truth]))
    test = data.indices["test"]
    assert len(test) == len(truth["test"][1]) == 624
    assert len(data.manifest) == 3882 + 524 + 624
    image, label = ReaderDataset(data.reader, data.labels, test)[10]
    np.testing.assert_array_equal((image[0].numpy() * 255).round(), truth["test"][0][10])
    assert int(label) == truth["test"][1][10]
