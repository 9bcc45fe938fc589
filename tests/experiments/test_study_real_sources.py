"""A study runs from the README's commands on a DICOM folder with a label CSV and on a ChestX-ray14
folder with the paper authors' split files (generated files in the formats the README names)."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from experiments import run_study

# each study trains two tiny CNNs and writes a report: about a minute on the loaded 2-core machine
pytestmark = pytest.mark.slow
FAST = ["train.max_epochs=1", "bootstrap_resamples=20", "attacks=[{name: fgsm, eps: [0.02]}]"]


def write_dicom(path, pixels):
    """An uncompressed 12-bit MONOCHROME2 file holding `pixels`."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "CR", *pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_a_study_on_a_dicom_folder_from_the_readme_command(tmp_path, smoke_config):
    root, rng, rows = tmp_path / "dicom", np.random.default_rng(0), []
    for i in range(80):  # a finding is a bright square in the centre
        pixels = rng.integers(0, 1500, (24, 24))
        if i % 2:
            pixels[8:16, 8:16] += 2500
        write_dicom(root / f"series{i // 20}" / f"{i}.dcm", pixels)
        rows.append({"file": f"series{i // 20}/{i}.dcm", "finding": i % 2})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    readme = ["data.source=dicom", "data.domain=radiology", f"data.root={root}", "data.csv_file=labels.csv",
              "data.path_column=file", "data.label_column=finding"]
    # a fifth of each development set for validation: both classes in d2's (the default's 3 images are one)
    result = run_study(smoke_config(tmp_path, *readme, *FAST, "data.val_fraction=0.2"))
    table = result.table
    assert len(table) == 4 and set(table["target"]) == {"a", "b"}
    manifest = pd.read_csv(result.reports["radiology"] / "split_manifest.csv")
    test = manifest[manifest["partition"] == "test"]
    assert sorted(manifest["sample_id"]) == sorted(r["file"] for r in rows) and 0 < len(test) < 80
    assert (table["auc_clean"] > 0.8).all()  # the finding's bright square came through the DICOM pixel path


def ids_of(patients):
    return [f"{p:08d}_{k:03d}" for p in patients for k in range(2)]


def test_a_study_on_chestxray14_with_the_authors_split_files(tmp_path, smoke_config):
    root, rows = tmp_path / "nih", []
    for p in range(48):  # two images a patient in the release's images_NNN/images/ layout
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            rows.append({"Image Index": name, "Finding Labels": "Effusion|Mass" if p % 2 else "No Finding",
                         "Patient ID": str(p)})
            folder = root / f"images_{1 + p // 24:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (16, 16), 40 + 150 * (p % 2) + k).save(folder / name)
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    splits = tmp_path / "splits"  # the authors' format: unquoted ids, d0 = d1/10, d3 = d2/2
    splits.mkdir()
    sets = {"d0": (range(12, 16), range(24, 26)), "d1": (range(12, 24), range(24, 28)),
            "d2": (range(28, 42), range(42, 48)), "d3": (range(28, 35), range(42, 48))}
    for name, (train, val) in sets.items():
        lists = {"testIDs": ids_of(range(12)), "trainIDs": ids_of(train), "valIDs": ids_of(val)}
        (splits / f"{name}_filenames.yml").write_text(
            "".join(f"{key}:\n" + "".join(f"- {i}\n" for i in ids) for key, ids in lists.items()))
    readme = ["data.source=chestxray14", "data.domain=radiology", f"data.root={root}", f"data.splits={splits}"]
    # a fifth of each development set for validation: both classes in d2's (the default's 3 images are one)
    result = run_study(smoke_config(tmp_path, *readme, *FAST, "data.val_fraction=0.2"))
    table = result.table
    assert len(table) == 4 and set(table["target"]) == {"a", "b"}
    manifest = pd.read_csv(result.reports[result.table["domain"].iloc[0]] / "split_manifest.csv", dtype=str)
    test = manifest[manifest["partition"] == "test"]["sample_id"].str[:-4]
    assert sorted(test) == sorted(ids_of(range(12)))  # the files' test set, not a drawn one
    digest = hashlib.sha256("".join(
        f"d{k}_filenames.yml {hashlib.sha256((splits / f'd{k}_filenames.yml').read_bytes()).hexdigest()}\n"
        for k in range(4)).encode()).hexdigest()
    assert set(manifest["split_sha256"]) == {digest}
