"""`data.source: dicom` on files pydicom ships, on generated files with known pixel maths, and on
broken files (each one line naming the file)."""
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from datamodules import build_datamodule
from datamodules.base import ReaderDataset


def write_dicom(path, pixels, bits=12, photometric="MONOCHROME2", signed=False, **tags):
    """An uncompressed single-frame grey DICOM file holding `pixels` (stored values)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "p"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def folder(tmp_path, files: dict, labels=None):
    """`files` {relative name: source path or writer}; labels.csv with alternating 0/1 labels."""
    root = tmp_path / "dcm"
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / name)
    labels = labels or [i % 2 for i in range(len(files))]
    pd.DataFrame({"path": list(files), "label": labels, "patient": [f"p{i}" for i in range(len(files))]}).to_csv(
        root / "labels.csv", index=False)
    return root


def cfg(root, size=8, **extra):
    return dict(domain="radiology", source="dicom", root=str(root), image_size=size, seed=0, batch_size=4,
                test_fraction=0.3, val_fraction=0.3, patient_column="patient", cache_dir="none", **extra)


def images_of(data):
    ds = ReaderDataset(data.reader, data.labels, np.arange(len(data.manifest)))
    return [ds[i][0] for i in range(len(ds))]


def test_window_rescale_monochrome1_and_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, (8, 8))
    src = tmp_path / "src"
    files = {
        # modality rescale then window (DICOM PS3.3 C.11.2.1.2: linear, clipped to the output range)
        "a/window.dcm": write_dicom(src / "w.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024,
                                    WindowCenter=2000, WindowWidth=3000),
        # MONOCHROME1: the same window, inverted
        "a/mono1.dcm": write_dicom(src / "m.dcm", stored, photometric="MONOCHROME1", RescaleSlope=2,
                                   RescaleIntercept=-1024, WindowCenter=2000, WindowWidth=3000),
        # no window: the 12 stored bits span [0, 1]
        "b/bits12.dcm": write_dicom(src / "b12.dcm", stored),
        # 16 bits, signed, no window
        "b/bits16.dcm": write_dicom(src / "b16.dcm", stored * 16 - 32768, bits=16, signed=True),
    }
    for _ in range(6):  # more patients, so every split has some
        files[f"c/{len(files)}.dcm"] = files["b/bits12.dcm"]
    data = build_datamodule(cfg(folder(tmp_path, files), size=8))
    assert (data.task, data.channels) == ("binary", 1)
    images = [img[0].numpy() for img in images_of(data)]
    hu = stored * 2.0 - 1024
    window = np.clip((hu - 1999.5) / 2999 + 0.5, 0, 1)
    expected = [window, 1 - window, stored / 4095, stored * 16 / 65535]
    for got, want in zip(images, expected):
        np.testing.assert_allclose(got, np.round(want * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("name, size", [("CT_small.dcm", 128), ("MR_small.dcm", 64)])
def test_files_pydicom_ships(name, size, tmp_path):
    path = get_testdata_file(name, download=False)  # shipped in pydicom's wheel: no download
    data = build_datamodule(cfg(folder(tmp_path, {f"{k}.dcm": path for k in range(8)}), size=size))
    raw = pydicom.dcmread(path).pixel_array.astype(float)
    got = images_of(data)[0][0].numpy()
    assert got.shape == raw.shape == (size, size)
    if name == "MR_small.dcm":  # window (600, 1600): inside it the map is linear in the stored values
        inside = (raw > 600 - 800 + 5) & (raw < 600 + 800 - 5)
        assert inside.mean() > 0.5 and np.corrcoef(got[inside], raw[inside])[0, 1] > 0.999
    else:  # CT_small: rescale (slope 1, intercept -1024) and no window: the 16 signed bits' HU range
        np.testing.assert_allclose(got, np.round((raw + 32768) / 65535 * 255) / 255, atol=1e-6)


@pytest.mark.parametrize("name, culprit", [
    ("rtplan.dcm", "no pixel data"),
    ("JPEGLSNearLossless_16.dcm", "compressed transfer syntax JPEG-LS Lossy (Near-Lossless) Image Compression, and no decoder"),
    ("SC_rgb_rle_2frame.dcm", "multi-frame DICOM (2 frames); one image per file is read"),
    ("MR_truncated.dcm", "truncated pixel data"),
])
def test_broken_files_are_one_line_naming_the_file(name, culprit, tmp_path):
    good = get_testdata_file("MR_small.dcm", download=False)
    files = {"ok1.dcm": good, "ok2.dcm": good, "bad.dcm": get_testdata_file(name, download=False)}
    root = folder(tmp_path, files)
    with pytest.raises(ValueError) as err:
        build_datamodule(cfg(root))
    message = str(err.value)
    assert "\n" not in message and "labels.csv, line 4" in message and str(root / "bad.dcm") in message
    assert culprit in message


def test_not_dicom_and_missing_file(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"just text, not DICOM")
    root = folder(tmp_path, {"x.dcm": tmp_path / "x.dcm"})
    with pytest.raises(ValueError, match=r"labels.csv, line 2: .*x.dcm: not a readable DICOM file"):
        build_datamodule(cfg(root))
    (root / "x.dcm").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels.csv, line 2: DICOM file .*x.dcm not found"):
        build_datamodule(cfg(root))


@pytest.mark.parametrize("tag", ["Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
                                 "BitsStored", "PixelRepresentation"])
def test_a_missing_required_tag_is_one_line_naming_it(tag, tmp_path):
    good = write_dicom(tmp_path / "src" / "good.dcm", np.zeros((8, 8)))
    bad = pydicom.dcmread(good)
    bad["PixelData"].VR = "OW"  # stated, so the file can be written without BitsAllocated
    delattr(bad, tag)
    bad.save_as(tmp_path / "src" / "bad.dcm")
    root = folder(tmp_path, {"ok1.dcm": good, "ok2.dcm": good, "bad.dcm": tmp_path / "src" / "bad.dcm"})
    with pytest.raises(ValueError) as err:
        build_datamodule(cfg(root))
    want = f"{root / 'labels.csv'}, line 4: {root / 'bad.dcm'}: missing tag {tag}, required to read the pixels"
    assert str(err.value) == want


def test_the_pixel_cap_counts_rows_columns_frames_and_samples(tmp_path):
    good = write_dicom(tmp_path / "src" / "good.dcm", np.zeros((8, 8)))
    files = {f"{i}.dcm": good for i in range(8)}
    at_cap = folder(tmp_path / "a", files)  # two folders: an index read once is not checked again in-process
    assert len(build_datamodule(cfg(at_cap, max_pixels=64)).labels) == 8  # 8 x 8 x 1 x 1: at the cap
    above = folder(tmp_path / "b", files)
    with pytest.raises(ValueError, match=r"line 2: .*0\.dcm: DICOM of 8 x 8 x 1 x 1 \(rows x columns x frames x "
                                         r"samples\) = 64 pixels, above data.max_pixels=63$"):
        build_datamodule(cfg(above, max_pixels=63))
