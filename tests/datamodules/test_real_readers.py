"""Real-data readers on tiny files built in each native format, and their one-line errors."""
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from datamodules import build_datamodule
from datamodules.base import ReaderDataset
from datamodules.readers.chestxray14 import LABEL_NAMES as NIH_LABELS

SIZE = 16


def _cfg(source, domain, root, **extra):
    return dict(domain=domain, source=source, root=str(root), image_size=SIZE, seed=0, dev_set="d1",
                batch_size=4, test_fraction=0.2, val_fraction=0.2, **extra)


def _all_samples(data):
    """(image, label) for every manifest row, through the dataset class the loaders use."""
    ds = ReaderDataset(data.reader, data.labels, np.arange(len(data.manifest)))
    return {j: ds[j] for j in range(len(ds))}


def _write_pcam(root, n=(12, 6, 6), rng=np.random.default_rng(0)):
    arrays = {}
    for split, count in zip(("train", "valid", "test"), n):
        x = rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (count, 1, 1, 1), dtype=np.uint8)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fh:
            fh["x"] = x
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fh:
            fh["y"] = y
        arrays[split] = (x, y.reshape(-1))
    return arrays


def test_pcam_reads_lazily_with_pcam_test_split_as_test_set(tmp_path):
    arrays = _write_pcam(tmp_path)
    data = build_datamodule(_cfg("pcam", "pathology", tmp_path))
    assert (data.task, data.num_outputs, data.channels) == ("binary", 1, 3)
    test_ids = set(data.manifest.iloc[data.indices["test"]]["sample_id"])
    assert test_ids == {f"test:{i}" for i in range(6)}
    samples = _all_samples(data)
    for j, sample_id in enumerate(data.manifest["sample_id"]):
        split, i = sample_id.split(":")
        x, y = arrays[split]
        image, label = samples[j]
        np.testing.assert_allclose(image.numpy(), x[int(i)].transpose(2, 0, 1) / 255.0, atol=1e-6)
        assert int(label) == y[int(i)]


def test_pcam_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="data root not found"):
        build_datamodule(_cfg("pcam", "pathology", tmp_path / "nowhere"))
    _write_pcam(tmp_path)
    bad = tmp_path / "camelyonpatch_level_2_split_valid_x.h5"
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"split_valid_x\.h5: unreadable HDF5") as err:
        build_datamodule(_cfg("pcam", "pathology", tmp_path))
    assert "\n" not in str(err.value)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r"split_valid_x\.h5: PCam HDF5 file not found"):
        build_datamodule(_cfg("pcam", "pathology", tmp_path))


def _png(path, value, mode="L", size=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size, size) if mode == "L" else (size, size, 3), value, np.uint8)
    Image.fromarray(array).save(path)


def test_chestxray14_labels_patients_and_images(tmp_path):
    rows, expected = [], {}
    rng = np.random.default_rng(1)
    for i in range(30):
        patient = i // 3
        findings = list(rng.choice(NIH_LABELS[:-1], rng.integers(0, 3), replace=False)) or ["No Finding"]
        name = f"{patient:08d}_{i % 3:03d}.png"
        rows.append({"Image Index": name, "Finding Labels": "|".join(findings), "Patient ID": patient})
        _png(tmp_path / f"images_{i % 2 + 1:03d}" / "images" / name, 8 * i)
        expected[name] = ([int(n in findings) for n in NIH_LABELS], 8 * i)
    pd.DataFrame(rows).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    data = build_datamodule(_cfg("chestxray14", "radiology", tmp_path))
    assert (data.task, data.num_outputs, data.channels, data.label_names) == ("multilabel", 15, 1, NIH_LABELS)
    assert list(data.manifest["patient_id"]) == [str(r["Patient ID"]) for r in rows]
    for j, (image, label) in _all_samples(data).items():
        labels, value = expected[data.manifest["sample_id"][j]]
        assert label.tolist() == labels
        assert image.shape == (1, SIZE, SIZE) and abs(float(image.mean()) - value / 255) < 1e-6


def test_chestxray14_errors(tmp_path):
    _png(tmp_path / "images" / "a.png", 10)
    _png(tmp_path / "images" / "b.png", 10)
    csv = tmp_path / "Data_Entry_2017.csv"
    pd.DataFrame({"Image Index": ["a.png", "b.png"], "Finding Labels": ["Effusion", "Flu"],
                  "Patient ID": [1, 2]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"Data_Entry_2017\.csv, line 3: unknown label 'Flu'"):
        build_datamodule(_cfg("chestxray14", "radiology", tmp_path))
    pd.DataFrame({"Image Index": ["a.png"], "Finding Labels": ["Effusion"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"required column 'Patient ID' missing"):
        build_datamodule(_cfg("chestxray14", "radiology", tmp_path))
    pd.DataFrame({"Image Index": ["a.png", "c.png"], "Finding Labels": ["Effusion", "Mass"],
                  "Patient ID": [1, 2]}).to_csv(csv, index=False)
    with pytest.raises(FileNotFoundError, match=r"line 3: image 'c.png' not found"):
        build_datamodule(_cfg("chestxray14", "radiology", tmp_path))
    # a truncated PNG is caught before training
    good = tmp_path / "images" / "c.png"
    _png(good, 10)
    good.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"c\.png: truncated PNG image"):
        build_datamodule(_cfg("chestxray14", "radiology", tmp_path))


def _jpeg(path, rgb, size=24):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((size, size + 8, 3), np.uint8)  # black border around a square "field of view"
    image[4:-4, 8:-8] = rgb
    Image.fromarray(image).save(path, quality=95)


def test_kaggle_dr_referable_level_and_patients(tmp_path):
    rows = []
    for patient in range(12):
        for eye in ("left", "right"):
            level = (patient + (eye == "right")) % 5
            rows.append({"image": f"{patient + 10}_{eye}", "level": level})
            _jpeg(tmp_path / "train" / f"{patient + 10}_{eye}.jpeg", (200, 90, 40))
    pd.DataFrame(rows).to_csv(tmp_path / "trainLabels.csv", index=False)
    data = build_datamodule(_cfg("kaggle_dr", "ophthalmology", tmp_path))
    assert (data.task, data.num_outputs, data.channels) == ("binary", 1, 3)
    assert list(data.manifest["patient_id"]) == [r["image"].split("_")[0] for r in rows]
    samples = _all_samples(data)
    for j, row in enumerate(rows):
        image, label = samples[j]
        assert int(label) == int(row["level"] >= 2)
        # the field of view is cropped to its bounding box: no black columns remain at the sides
        assert float(image[0, SIZE // 2, 0]) > 0.6 and float(image[0, SIZE // 2, -1]) > 0.6


def test_kaggle_dr_errors(tmp_path):
    _jpeg(tmp_path / "1_left.jpeg", (200, 90, 40))
    csv = tmp_path / "trainLabels.csv"
    pd.DataFrame({"image": ["1_left"], "level": [7]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"trainLabels\.csv, line 2: unknown label level='7'"):
        build_datamodule(_cfg("kaggle_dr", "ophthalmology", tmp_path))
    pd.DataFrame({"image": ["1_up"], "level": [1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"line 2: image '1_up' is not named <patient>_left\|right"):
        build_datamodule(_cfg("kaggle_dr", "ophthalmology", tmp_path))
    pd.DataFrame({"image": ["1_left"], "level": [1]}).to_csv(csv, index=False)
    jpeg = tmp_path / "1_left.jpeg"
    jpeg.write_bytes(jpeg.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"1_left\.jpeg: truncated JPEG image"):
        build_datamodule(_cfg("kaggle_dr", "ophthalmology", tmp_path))


def _write_medmnist(root, flag, size, images_shape, labels_fn, n=(20, 6, 8)):
    rng = np.random.default_rng(2)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *images_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels_fn(rng, count)
    np.savez(root / f"{flag}{'' if size == 28 else f'_{size}'}.npz", **arrays)
    return arrays


def test_medmnist_retina_is_binary_referable_and_resized(tmp_path):
    arrays = _write_medmnist(tmp_path, "retinamnist", 28, (28, 28, 3), lambda r, c: r.integers(0, 5, (c, 1)))
    data = build_datamodule(_cfg("medmnist", "ophthalmology", tmp_path, npz_size=28))
    assert (data.task, data.channels) == ("binary", 3)
    levels = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in ("train", "val", "test")])
    images = np.concatenate([arrays[f"{s}_images"] for s in ("train", "val", "test")])
    samples = _all_samples(data)
    for j in range(len(levels)):
        image, label = samples[j]
        assert int(label) == int(levels[j] >= 2)
        assert image.shape == (3, SIZE, SIZE)
        # a 28 -> 16 area-like resize keeps the mean intensity
        assert abs(float(image.mean()) - images[j].mean() / 255) < 0.02
    assert set(data.manifest.iloc[data.indices["test"]]["sample_id"]) == {f"test:{i}" for i in range(8)}


def test_medmnist_chest_multilabel_and_missing_file(tmp_path):
    arrays = _write_medmnist(tmp_path, "chestmnist", 64, (64, 64), lambda r, c: r.integers(0, 2, (c, 14)))
    with pytest.raises(FileNotFoundError, match=r"chestmnist\.npz: MedMNIST file not found"):
        build_datamodule(_cfg("medmnist", "radiology", tmp_path))  # image_size 16 -> the 28 px file
    data = build_datamodule(_cfg("medmnist", "radiology", tmp_path, npz_size=64))
    assert (data.task, data.num_outputs, data.channels) == ("multilabel", 14, 1)
    labels = np.concatenate([arrays[f"{s}_labels"] for s in ("train", "val", "test")])
    np.testing.assert_array_equal(data.labels.numpy(), labels)


def test_csv_folder_multiclass_with_patients(tmp_path):
    names = ["benign", "malignant", "normal"]
    rows = []
    for i in range(24):
        rows.append({"file": f"img/{i}.png", "diagnosis": names[i % 3], "subject": f"p{i // 2}"})
        _png(tmp_path / "img" / f"{i}.png", (10 * i, 5 * i, 3 * i), mode="RGB")
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    data = build_datamodule(_cfg("csv", "pathology", tmp_path, path_column="file", label_column="diagnosis",
                                 patient_column="subject", task="multiclass", labels=names))
    assert (data.task, data.num_outputs, data.label_names) == ("multiclass", 3, names)
    assert list(data.manifest["patient_id"]) == [r["subject"] for r in rows]
    for j, (image, label) in _all_samples(data).items():
        assert int(label) == j % 3
        np.testing.assert_allclose(image[:, 0, 0].numpy(), np.array([10, 5, 3]) * j / 255, atol=1e-6)


def test_csv_folder_errors(tmp_path):
    _png(tmp_path / "root" / "a.png", 1)
    (tmp_path / "outside.png").write_bytes((tmp_path / "root" / "a.png").read_bytes())
    csv = tmp_path / "root" / "labels.csv"
    cfg = _cfg("csv", "radiology", tmp_path / "root")
    pd.DataFrame({"path": ["a.png", "../outside.png"], "label": [0, 1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: image path '../outside.png' resolves outside"):
        build_datamodule(cfg)
    pd.DataFrame({"path": ["a.png"], "label": ["maybe"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"line 2: unknown label 'maybe'"):
        build_datamodule(cfg)
    pd.DataFrame({"file": ["a.png"], "label": [1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"labels\.csv: required column 'path' missing"):
        build_datamodule(cfg)
    (tmp_path / "root" / "b.png").write_bytes(b"not an image at all")
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"b\.png: unreadable image"):
        build_datamodule(cfg)
    # too few patients for the development set: empty split, named
    pd.DataFrame({"path": ["a.png"] * 3, "label": [0, 1, 0]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"development set d1/10 has an empty train split"):
        build_datamodule({**cfg, "dev_set": "d1/10"})
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: label file not found"):
        build_datamodule({**cfg, "csv_file": "nope.csv"})


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"data.source: pcam holds pathology data, not radiology"):
        build_datamodule(_cfg("pcam", "radiology", tmp_path))
    with pytest.raises(ValueError, match=r"data.root: required for source kaggle_dr"):
        build_datamodule(_cfg("kaggle_dr", "ophthalmology", ""))
    with pytest.raises(ValueError, match=r"data.domain: unknown synthetic domain 'dermatology'"):
        build_datamodule(_cfg("synthetic", "dermatology", tmp_path))
    with pytest.raises(ValueError, match=r"data.domain: 'derm/a'; a domain is named by letters"):
        build_datamodule(_cfg("csv", "derm/a", tmp_path))


def test_pcam_reader_works_in_worker_processes(tmp_path):
    arrays = _write_pcam(tmp_path)
    data = build_datamodule({**_cfg("pcam", "pathology", tmp_path), "num_workers": 2})
    images = torch.cat([x for x, _ in data.test_dataloader()])
    expected = arrays["test"][0].transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(images.numpy(), expected, atol=1e-6)
