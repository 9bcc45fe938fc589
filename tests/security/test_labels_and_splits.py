"""Labels and splits that would give a silent wrong number (issues 31 and 32): each is one line naming
the file, key or patient through the CLI, with nothing written; the binary task's positive label is
stated and scores the AUC the independent computation gives; split files and label tables fuzzed."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import roc_auc_score

from datamodules.readers.tables import read_table
from datamodules.split_files import file_manifest
from experiments.cli import main
from experiments.design.config import preset_path

PATIENTS = 24  # two images each in the CSV folders: p00/0.png, p00/1.png, ...


def run_cli(tmp_path, capsys, command, *overrides):
    """(exit code, stderr lines) of `command` on the smoke preset with `overrides`; asserts that no
    store, no output folder and no traceback came of it."""
    store, out = tmp_path / "mlflow.db", tmp_path / "out"
    code = main([command, "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={out}", "data.cache_dir=none", *overrides])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert not store.exists() and not out.exists()
    assert all("Traceback" not in line for line in err)
    return code, err, captured.out


def refused(tmp_path, capsys, culprit, *overrides):
    """`run` stops non-zero with one stderr line holding `culprit`; `plan` non-zero, naming it too."""
    code, err, _ = run_cli(tmp_path, capsys, "run", *overrides)
    assert code != 0 and len(err) == 1 and culprit in err[0], err
    code, err, out = run_cli(tmp_path, capsys, "plan", *overrides)
    assert code != 0 and culprit in "\n".join(err) + out, (err, out)


def csv_folder(root, labels=None, brightness=None):
    """Grey 8x8 PNGs, two per patient, and labels.csv (path, label, patient); class 1 every other patient."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(PATIENTS):
        for k in range(2):
            path = f"p{p:02d}/{k}.png"
            (root / path).parent.mkdir(exist_ok=True)
            value = 128 if brightness is None else int(brightness[2 * p + k])
            Image.new("L", (8, 8), value).save(root / path)
            rows.append({"path": path, "label": p % 2 if labels is None else labels[2 * p + k], "patient": f"P{p}"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def csv_source(root, *more):
    return ["data.source=csv", "data.domain=chest", f"data.root={root}", "data.patient_column=patient",
            "data.image_size=8", "data.channels=1", *more]


def pneumonia_npz(root, labels=(0, 1), dtype=np.uint8, n=6):
    """A PneumoniaMNIST file (28 px grey) whose labels cycle through `labels`."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.full((n, 28, 28), 100, np.uint8)
        arrays[f"{split}_labels"] = np.resize(np.asarray(labels, dtype), n).reshape(n, 1)
    np.savez(root / "pneumoniamnist.npz", **arrays)
    return root


def medmnist_source(root, *more):
    return ["data.source=medmnist", "data.domain=chest", "data.flag=pneumoniamnist", f"data.root={root}",
            "data.image_size=28", *more]


# --- labels that are not whole class indices ---------------------------------------------------------

@pytest.mark.parametrize("labels, dtype, culprit", [
    pytest.param((0.3, 0.9), np.float64, "sample train:0: label [0.3] is not a whole class index 0..1",
                 id="fractional"),
    pytest.param((0.0, np.nan), np.float64, "sample train:1: label [nan] is not a whole class index", id="nan"),
    pytest.param((0, 2), np.int64, "sample train:1: label [2] is not a whole class index 0..1", id="too large"),
    pytest.param((0, -1), np.int64, "sample train:1: label [-1] is not a whole class index", id="negative"),
])
def test_medmnist_labels_that_are_not_class_indices_are_refused(labels, dtype, culprit, tmp_path, capsys):
    root = pneumonia_npz(tmp_path / "data", labels, dtype)
    refused(tmp_path, capsys, f"{root / 'pneumoniamnist.npz'}: {culprit}", *medmnist_source(root))


def test_whole_float_labels_are_read_as_their_classes(tmp_path):
    from datamodules.readers.medmnist_npz import read_medmnist
    root = pneumonia_npz(tmp_path / "data", (1.0, 0.0, 1.0), np.float32)
    assert read_medmnist(root, "pneumoniamnist", 28, 28).labels[:6].tolist() == [1, 0, 1, 1, 0, 1]


@pytest.mark.parametrize("value", ["0.5", "1.0", "2", "-1", "yes"])
def test_csv_labels_that_are_not_0_or_1_name_the_line(value, tmp_path, capsys):
    labels = [p // 2 % 2 for p in range(2 * PATIENTS)]
    labels[7] = value
    root = csv_folder(tmp_path / "data", labels)
    refused(tmp_path, capsys, f"{root / 'labels.csv'}, line 9: unknown label {value!r}", *csv_source(root))


# --- the positive label -----------------------------------------------------------------------------

def test_a_flipped_medmnist_label_list_is_refused(tmp_path, capsys):
    root = pneumonia_npz(tmp_path / "data")
    refused(tmp_path, capsys, "data.labels: ['pneumonia', 'normal'] is not pneumoniamnist's class order "
            "['normal', 'pneumonia'] (medmnist.INFO); its positive class is class 1, 'pneumonia'; this order "
            "would flip the task", *medmnist_source(root, "data.labels=[pneumonia, normal]"))


@pytest.mark.parametrize("labels", ["[normal, pneumonia, other]", "[pneumonia]", "[same, same]"])
def test_a_binary_csv_label_list_names_two_classes(labels, tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    refused(tmp_path, capsys, "data.labels:", *csv_source(root, f"data.labels={labels}"))


def test_plan_states_the_positive_label(tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    splits = split_csv(tmp_path / "splits.csv", by_patient)
    code, _, out = run_cli(tmp_path, capsys, "plan", *csv_source(root, "data.labels=[normal, pneumonia]",
                                                                f"data.splits={splits}"))
    assert code == 0 and "positive label (class 1, what the AUCs score): pneumonia" in out


class Brightness(torch.nn.Module):
    """A fixed scorer: logits [-b, b] for the mean brightness b of each image (outputs normal, pneumonia)."""

    def forward(self, images):
        b = images.mean(dim=(1, 2, 3)) * 10
        return torch.stack([-b, b], dim=1)


def test_the_auc_scores_the_named_positive_label(tmp_path):
    """An external fixed scorer whose outputs are [normal, pneumonia]: the study's clean AUC is sklearn's
    on the file's labels with pneumonia (class 1) positive, and the label is in the manifest and runs."""
    from mlflow.tracking import MlflowClient

    from experiments import load_config, run_study

    rng = np.random.default_rng(0)
    labels = [p % 2 for p in range(PATIENTS) for _ in range(2)]
    brightness = rng.integers(60, 160, 2 * PATIENTS) + 40 * np.asarray(labels)  # informative, not perfect
    root = csv_folder(tmp_path / "data", labels, brightness)
    splits = split_csv(tmp_path / "splits.csv", by_patient)
    images = torch.rand(2, 1, 8, 8)
    program = torch.export.export(Brightness(), (images,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, tmp_path / "scorer.pt2")
    models = [{"name": "s", "arch": "tiny_cnn", "init": "random", "dev_set": "d1", "instance": 0},
              {"name": "scorer", "external": {"format": "export", "path": str(tmp_path / "scorer.pt2"),
                                              "input": {"size": 8, "channels": 1},
                                              "output": {"kind": "logits", "labels": ["normal", "pneumonia"]}}}]
    cfg = load_config(preset_path("smoke"), [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"output_dir={tmp_path / 'out'}", "data.cache_dir=none",
        *csv_source(root, "data.labels=[normal, pneumonia]", f"data.splits={splits}"),
        f"models={json.dumps(models)}", "targets=[scorer]", "surrogates=[s]", "train.max_epochs=1",
        "bootstrap_resamples=0", "attacks=[{name: fgsm, eps: [0.02]}]"])
    result = run_study(cfg)
    table = result.table
    [report] = result.reports.values()
    manifest = pd.read_csv(report / "split_manifest.csv")
    test = manifest[manifest["partition"] == "test"]
    rows = [int(s.split("/")[0][1:]) * 2 + int(s.split("/")[1][0]) for s in test["sample_id"]]
    expected = roc_auc_score(np.asarray(labels)[rows], brightness[rows])
    assert 0.6 < expected < 1.0
    assert table["auc_clean"].iloc[0] == pytest.approx(expected, abs=1e-9)
    assert set(manifest["positive_label"]) == {"pneumonia"}
    client = MlflowClient(cfg.tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and "layout.task" not in r.data.params]
    trained = [r for r in runs if "layout.task" in r.data.params]
    assert [r.data.params["data.positive_label"] for r in parent] == ["pneumonia"]
    assert [r.data.params["layout.positive_label"] for r in trained] == ["pneumonia"]


# --- keys that do not apply -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, culprit", [
    pytest.param(["data.flag=pneumoniamnist"], "data.flag: 'pneumoniamnist' is read by source medmnist only, "
                 "not synthetic", id="flag on synthetic"),
    pytest.param(["data.path_column=file"], "data.path_column: 'file' is read by source csv or dicom only",
                 id="csv key on synthetic"),
    pytest.param(["data.root=/tmp"], "data.root: '/tmp' is read by source", id="root on synthetic"),
    pytest.param(["data.labels=[a, b]"], "data.labels: ['a', 'b'] is read by source csv or dicom or medmnist only",
                 id="labels on synthetic"),
    pytest.param(["data.source=medmnist", "data.flag=pneumoniamnist", "data.root=/tmp", "data.label_column=y"],
                 "data.label_column: 'y' is read by source csv or dicom only, not medmnist", id="csv key on medmnist"),
    pytest.param(["data.source=medmnist", "data.flag=pneumoniamnist", "data.root=/tmp",
                  "data.ordinal_threshold=3"], "data.ordinal_threshold: 3; pneumoniamnist is binary-class, not an "
                 "ordinal grading (retinamnist)", id="ordinal threshold on a binary set"),
    pytest.param(["data.source=csv", "data.root=/tmp", "data.npz_size=64"],
                 "data.npz_size: 64 is read by source medmnist only, not csv", id="medmnist key on csv"),
])
def test_a_key_that_does_not_apply_is_refused(overrides, culprit, tmp_path, capsys):
    refused(tmp_path, capsys, culprit, *overrides)


# --- splits: patients in two sets, one-class sets ---------------------------------------------------

def split_csv(path, assign):
    """A sample_id,split file: `assign(patient)` -> split of both of its images (None: left out)."""
    rows = [(f"p{p:02d}/{k}.png", assign(p)) for p in range(PATIENTS) for k in range(2) if assign(p)]
    pd.DataFrame(rows, columns=["sample_id", "split"]).to_csv(path, index=False)
    return path


def by_patient(p):
    """Test: patients 0-7; d1: val 8-10, train 11-15; d2: val 16-18, train 19-23 (labels alternate)."""
    for split, end in (("test", 8), ("d1_val", 11), ("d1_train", 16), ("d2_val", 19)):
        if p < end:
            return split
    return "d2_train"


def test_splits_by_patient_run_plan_cleanly(tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    splits = split_csv(tmp_path / "splits.csv", by_patient)
    code, _, out = run_cli(tmp_path, capsys, "plan", *csv_source(root, f"data.splits={splits}"))
    assert code == 0 and "Problems: none" in out


@pytest.mark.parametrize("move, culprit", [
    pytest.param("d1_train", "patient 'P0' is in test (id 'p00/0.png') and in d1 train (id 'p00/1.png')",
                 id="test and d1"),
    pytest.param("d2_train", "patient 'P0' is in test (id 'p00/0.png') and in d2 train (id 'p00/1.png')",
                 id="test and d2"),
])
def test_a_patient_in_test_and_development_data_is_refused(move, culprit, tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    splits = split_csv(tmp_path / "splits.csv", by_patient)
    table = pd.read_csv(splits)
    table.loc[table["sample_id"] == "p00/1.png", "split"] = move
    table.to_csv(splits, index=False)
    refused(tmp_path, capsys, f"{splits}: {culprit}", *csv_source(root, f"data.splits={splits}"))


def test_a_patient_in_d1_and_d2_is_refused(tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    splits = split_csv(tmp_path / "splits.csv", by_patient)
    table = pd.read_csv(splits)
    table.loc[table["sample_id"] == "p12/1.png", "split"] = "d2_train"
    table.to_csv(splits, index=False)
    refused(tmp_path, capsys, f"{splits}: patient 'P12' is in d1 train (id 'p12/0.png') and in d2 train "
            "(id 'p12/1.png') (rule: d1 train and d2 train share no patient)",
            *csv_source(root, f"data.splits={splits}"))


@pytest.mark.parametrize("assign, culprit", [
    pytest.param(lambda p: None if p in (1, 3, 5, 7) else by_patient(p), "the shared test set holds one class only "
                 "(all 8 samples have label 0)", id="test of one class"),
    pytest.param(lambda p: "d1_train" if p == 9 else by_patient(p),
                 "d1 val holds one class only (all 4 samples have label 0)", id="validation of one class"),
    pytest.param(lambda p: None if p in (12, 14) else by_patient(p),
                 "d1 train holds one class only (all 6 samples have label 1)", id="training data of one class"),
])
def test_a_split_of_one_class_is_refused_up_front(assign, culprit, tmp_path, capsys):
    root = csv_folder(tmp_path / "data")
    splits = split_csv(tmp_path / "splits.csv", assign)
    refused(tmp_path, capsys, culprit, *csv_source(root, f"data.splits={splits}"))


# --- fuzzing: the split-file reader and the label tables --------------------------------------------

IDS = [f"s{i}.png" for i in range(12)]
PATIENT_OF = [f"P{i // 2}" for i in range(12)]
SPLIT_NAMES = ["test", "d1_train", "d1_val", "d2_train", "d2_val", "d1/10_train", "d1/10_val", "d2/2_train",
               "d2/2_val"]


def one_line(err: Exception, path) -> None:
    message = str(err)
    assert "\n" not in message and message.startswith(str(path)), message


def check_manifest(manifest, lines):
    """The manifest of listed (id, split) lines obeys every rule, checked here independently."""
    where = {}
    for sample, split in lines:
        where.setdefault(sample if sample in IDS else sample + ".png", set()).add(split)
    for sample, splits in where.items():
        row = manifest.iloc[IDS.index(sample)]
        if "test" in splits:
            assert splits == {"test"} and row["partition"] == "test"
        else:
            assert row["partition"] in ("d1", "d2") and f"{row['partition']}_{row['stage']}" in splits
    for a, b in (("test", "d1"), ("test", "d2"), ("d1", "d2")):
        pa = set(manifest.loc[manifest["partition"] == a, "patient_id"])
        assert not pa & set(manifest.loc[manifest["partition"] == b, "patient_id"])


@given(st.lists(st.tuples(st.sampled_from(IDS + [i[:-4] for i in IDS] + ["nope", ""]),
                          st.sampled_from(SPLIT_NAMES + ["d3_train", "TEST", ""])), max_size=20))
def test_fuzzed_split_csv_gives_a_valid_manifest_or_one_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("split") / "splits.csv"
    pd.DataFrame(lines, columns=["sample_id", "split"]).to_csv(path, index=False)
    try:
        manifest = file_manifest(path, IDS, PATIENT_OF)
    except (ValueError, FileNotFoundError) as err:
        one_line(err, path)
        return
    check_manifest(manifest, lines)


@given(st.binary(max_size=400), st.sampled_from(["splits.csv", "folder"]))
def test_arbitrary_split_file_bytes_give_a_manifest_or_one_line(tmp_path_factory, content, kind):
    base = tmp_path_factory.mktemp("split")
    if kind == "folder":
        for name in ("d0", "d1", "d2", "d3"):
            (base / f"{name}_filenames.yml").write_bytes(content)
        path = base
    else:
        path = base / kind
        path.write_bytes(content)
    try:
        file_manifest(path, IDS, PATIENT_OF)
    except (ValueError, FileNotFoundError) as err:
        one_line(err, path)


@given(st.lists(st.sampled_from(IDS + ["s1", "x", "- [a]", "{a: 1}", "&a s0.png", "*a", "'s2.png'"]), max_size=8),
       st.sampled_from(["testIDs", "trainIDs", "valIDs"]), st.integers(0, 3))
def test_mutated_author_yaml_gives_a_manifest_or_one_line(tmp_path_factory, ids, key, which):
    folder = tmp_path_factory.mktemp("authors")
    for i, (train, val) in enumerate([(IDS[4:5], IDS[6:7]), (IDS[4:6], IDS[6:8]), (IDS[8:10], IDS[10:]),
                                      (IDS[8:9], IDS[10:])]):  # d0 (d1/10) within d1, d3 (d2/2) within d2
        lists = {"testIDs": IDS[:4], "trainIDs": train, "valIDs": val}
        lists[key] = ids if i == which else lists[key]
        (folder / f"d{i}_filenames.yml").write_text(
            "".join(f"{k}:\n" + "".join(f"- {v}\n" for v in vs) for k, vs in lists.items()))
    try:
        manifest = file_manifest(folder, IDS, PATIENT_OF)
    except (ValueError, FileNotFoundError) as err:
        one_line(err, folder)
        return
    assert set(manifest.loc[manifest["partition"] == "test", "sample_id"]) == set(IDS[:4])


@given(st.binary(max_size=300))
def test_arbitrary_label_table_bytes_give_a_table_or_one_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("table") / "labels.csv"
    path.write_bytes(content)
    try:
        table = read_table(path, ["path", "label"])
    except ValueError as err:
        one_line(err, path)
        return
    assert {"path", "label"} <= set(table.columns) and len(table) > 0


@given(st.lists(st.text(alphabet="01 .-+abé|\t", max_size=4), min_size=1, max_size=6))
def test_fuzzed_binary_labels_are_0_or_1_or_one_line(tmp_path_factory, values):
    from datamodules.readers.csv_folder import read_csv_folder
    root = tmp_path_factory.mktemp("csv")
    Image.new("L", (4, 4), 9).save(root / "a.png")
    pd.DataFrame({"path": ["a.png"] * len(values), "label": values}).to_csv(root / "labels.csv", index=False)
    try:
        source = read_csv_folder(root, 4, "labels.csv", 1, "binary", [])
    except ValueError as err:
        one_line(err, root / "labels.csv")
        return
    assert source.labels.tolist() == [int(v.strip()) for v in values]
    assert all(v.strip() in ("0", "1") for v in values)
