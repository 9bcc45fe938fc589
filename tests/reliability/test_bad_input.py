"""Bad input through the CLI: exit 2, one stderr line naming the culprit, no traceback, nothing written."""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from experiments.cli import main
from experiments.design.config import preset_path

CASES = [
    pytest.param(["models=[{name: a, arch: no_such_net, init: random, dev_set: d1, instance: 0}]"], "no_such_net",
                 id="unknown architecture"),
    pytest.param(["zoo.archs=[no_such_zoo_net]"], "no_such_zoo_net", id="unknown architecture in zoo factors"),
    pytest.param(["attacks=[{name: no_such_attack, eps: [0.02]}]"], "no_such_attack", id="unknown attack"),
    pytest.param(["data.domain=no_such_domain"], "no_such_domain", id="unknown domain"),
    pytest.param(["data.source=no_such_source"], "no_such_source", id="unknown source"),
    pytest.param(["attacks=[{name: fgsm, eps: [0.0]}]"], "eps", id="epsilon zero"),
    pytest.param(["attacks=[{name: fgsm, eps: [1.5]}]"], "1.5", id="epsilon above one"),
    pytest.param(["attacks=[{name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 0}}]"], "steps",
                 id="steps below one"),
    pytest.param(["train.max_epoch=1"], "max_epoch", id="unknown config key"),
    pytest.param(["models=[{name: a, arch: tiny_cnn, init: imagenet21k, dev_set: d1, instance: 0}]"],
                 "models.a.init: unknown init 'imagenet21k'", id="unknown init"),
    pytest.param(["models=[{name: a, arch: tiny_cnn, init: random, dev_set: d3, instance: 0}]"],
                 "models.a.dev_set: unknown development set 'd3'", id="unknown development set"),
    pytest.param(["data.num_patients=4"], "development set d1 has an empty train split", id="empty split"),
    pytest.param(["models.2.instance=1"], "override 'models.2.instance=1': models: a list of 2 items",
                 id="list item that is not there"),
    pytest.param(["attacks=[{name:fgsm,eps:[0.02]}]"], "override 'attacks=[{name:fgsm,eps:[0.02]}]': not valid YAML",
                 id="mapping without spaces"),
    pytest.param(["seeds=3"], "override 'seeds=3': seeds: must be a list, e.g. [3]", id="list key given a number"),
    pytest.param(["pairs=whitebox", "surrogates=[a]", "targets=[b]"], "pairs: 'whitebox' selects no", id="no pair"),
    pytest.param(["attacks=[]"], "attacks: empty", id="no attack"),
]


@pytest.mark.parametrize("overrides, culprit", CASES)
def test_bad_config_value_is_one_line_before_any_work(overrides, culprit, tmp_path, capsys):
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and culprit in err[0] and "Traceback" not in err[0]
    assert not store.exists() and not (tmp_path / "out").exists()


def test_malformed_yaml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["run", "--config", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]


def test_missing_data_root_names_the_folder(tmp_path, capsys):
    root = tmp_path / "absent"
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", "data.source=csv", f"data.root={root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "absent" in err[0]
    assert not store.exists()


CSV_CASES = [
    pytest.param({"path": ["a.png", "../outside.png"], "label": [0, 1]}, "'../outside.png' resolves outside",
                 id="path outside root"),
    pytest.param({"path": ["a.png"], "label": ["maybe"]}, "line 2: unknown label 'maybe'", id="label outside set"),
    pytest.param({"file": ["a.png"], "label": [1]}, "required column 'path' missing", id="csv missing column"),
    pytest.param({"path": ["a.png", "b.png"], "label": [0, 1]}, "b.png: unreadable image", id="corrupt image"),
]


@pytest.mark.parametrize("rows, culprit", CSV_CASES)
def test_bad_csv_data_is_one_line_before_any_work(rows, culprit, tmp_path, capsys):
    import pandas as pd
    from PIL import Image

    root = tmp_path / "root"
    root.mkdir()
    Image.new("L", (16, 16), 128).save(root / "a.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "outside.png")
    (root / "b.png").write_bytes(b"not an image at all")
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", "data.source=csv", "data.domain=radiology", f"data.root={root}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and culprit in err[0] and "Traceback" not in err[0]
    assert not store.exists() and not (tmp_path / "out").exists()


def run_cli(tmp_path, capsys, *overrides):
    """(exit code, stderr lines) of the smoke study with `overrides`; asserts nothing was written."""
    store, out = tmp_path / "mlflow.db", tmp_path / "out"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={out}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert not store.exists() and not out.exists()
    assert all("Traceback" not in line for line in err)
    return code, err


def write_pcam(root, shape=(16, 16, 3), dtype=np.uint8):
    """The six PCam HDF5 files, four images each."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fh:
            fh["x"] = np.full((4, *shape), 100, dtype)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fh:
            fh["y"] = np.array([0, 1, 0, 1], np.uint8).reshape(4, 1, 1, 1)
    return root


def write_medmnist(root, train_images):
    """A PathMNIST+ 64 px file whose train images are `train_images` (val and test valid)."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": train_images, "train_labels": np.zeros((len(train_images), 1), np.uint8)}
    for split in ("val", "test"):
        arrays[f"{split}_images"] = np.zeros((3, 64, 64, 3), np.uint8)
        arrays[f"{split}_labels"] = np.zeros((3, 1), np.uint8)
    np.savez(root / "pathmnist_64.npz", **arrays)
    return root


def test_truncated_hdf5_names_the_file(tmp_path, capsys):
    root = write_pcam(tmp_path / "pcam")
    bad = root / "camelyonpatch_level_2_split_valid_x.h5"
    bad.write_bytes(bad.read_bytes()[:1500])
    code, err = run_cli(tmp_path, capsys, "data.source=pcam", f"data.root={root}")
    assert code == 2 and len(err) == 1 and f"{bad}: unreadable HDF5 file" in err[0]


def nan_npz(root):
    images = np.full((4, 64, 64, 3), 0.5, np.float32)
    images[2, 10, 10, 1] = np.nan
    return ["data.source=medmnist", f"data.root={write_medmnist(root, images)}", "data.npz_size=64"]


def inf_tiff(root):
    root.mkdir()
    Image.new("L", (16, 16), 7).save(root / "a.png")
    pixels = np.zeros((16, 16), np.float32)
    pixels[3, 4] = np.inf
    Image.fromarray(pixels, mode="F").save(root / "b.tif")
    (root / "labels.csv").write_text("path,label\na.png,0\nb.tif,1\n")
    return ["data.source=csv", f"data.root={root}"]


@pytest.mark.parametrize("make, culprit", [
    pytest.param(nan_npz, "pathmnist_64.npz: train_images: sample 2 has NaN or inf pixels", id="NaN in npz"),
    pytest.param(inf_tiff, "b.tif: NaN or inf pixels", id="inf in float TIFF"),
])
def test_non_finite_pixels_name_the_file_and_sample(make, culprit, tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, *make(tmp_path / "data"))
    assert code == 2 and len(err) == 1 and culprit in err[0]


@pytest.mark.parametrize("make, culprit", [
    pytest.param(lambda root: ["data.source=pcam", f"data.root={write_pcam(root, shape=(16, 16, 4))}"],
                 "HDF5 key 'x' must be (N, H, W, 3) images, got shape (4, 16, 16, 4)", id="pcam RGBA"),
    pytest.param(lambda root: ["data.source=medmnist", "data.npz_size=64",
                               f"data.root={write_medmnist(root, np.zeros((4, 64, 64, 2), np.uint8))}"],
                 "train_images: images must be (N, H, W) grey or (N, H, W, 3) RGB", id="npz two channels"),
    pytest.param(lambda root: ["data.source=csv", f"data.root={root}", "data.channels=2"],
                 "data.channels: 2", id="csv two channels"),
])
def test_wrong_channel_count_is_named(make, culprit, tmp_path, capsys):
    code, err = run_cli(tmp_path, capsys, *make(tmp_path / "data"))
    assert code == 2 and len(err) == 1 and culprit in err[0]


@pytest.mark.parametrize("content, culprit", [
    pytest.param(b"PK\x03\x04 not a checkpoint at all", "not a weights-only checkpoint", id="unreadable"),
    pytest.param(None, "not a weights-only checkpoint (refused to load io.open)", id="pickled code"),
])
def test_bad_checkpoint_is_refused_before_any_work(content, culprit, tmp_path, capsys, code_payload):
    checkpoint = tmp_path / "model.pt"
    if content is None:
        torch.save({"weight": torch.zeros(1), "extra": code_payload}, checkpoint)
    else:
        checkpoint.write_bytes(content)
    model = f"{{name: a, arch: tiny_cnn, init: 'checkpoint:{checkpoint}', dev_set: d1, instance: 0}}"
    code, err = run_cli(tmp_path, capsys, f"models=[{model}]")
    assert code == 2 and len(err) == 1 and err[0].startswith("medtransfer: error: models.a.init: ")
    assert f"{checkpoint}: {culprit}" in err[0]
    assert not code_payload.marker.exists()


def test_unreachable_tracking_server_is_reported_with_the_missing_data_root(tmp_path, capsys, unused_port):
    uri = f"http://127.0.0.1:{unused_port}"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri={uri}",
                 f"output_dir={tmp_path / 'out'}", "data.source=csv", f"data.root={tmp_path / 'absent'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2  # every problem up front, one line each
    assert f"{tmp_path / 'absent'}: data root not found" in err[0]
    assert f"tracking.uri: tracking server {uri} unreachable" in err[1]
    assert not (tmp_path / "out").exists()
