"""Image files that cannot bomb, read at their real depth: decompression bombs (an RLE DICOM, PNGs
whose header declares far more pixels than their body holds), a DICOM without a required tag, a
16-bit PNG, and Hypothesis fuzzing of the PNG and DICOM readers (arbitrary bytes, hostile header fields)."""
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from datamodules import build_datamodule
from datamodules.readers.dicom import DicomReader, check_dicom
from datamodules.readers.images import ImageFileReader, PixelCap, check_image
from experiments.cli import main
from experiments.design.config import preset_path

REPO = Path(__file__).resolve().parents[2]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A grey 8-bit PNG whose IHDR declares width x height, with a body of a few rows of zeros (zlib)."""
    body = zlib.compress(b"\x00" * ((width + 1) * 64), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """An 8 x 8 JPEG whose start-of-frame marker declares width x height (the body stays 8 x 8)."""
    out = io.BytesIO()
    Image.new("L", (8, 8), 99).save(out, "JPEG")
    data = bytearray(out.getvalue())
    at = data.index(b"\xff\xc0") + 5  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def dicom_bytes(pixels: np.ndarray | None = None, syntax=ExplicitVRLittleEndian, rows=None, columns=None,
                pixel_data: bytes | None = None, drop: tuple = (), **tags) -> bytes:
    """A single-frame 16-bit grey DICOM file (its header fields overridable, tags in `drop` left out)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "p"
    pixels = np.zeros((4, 4), np.uint16) if pixels is None else pixels
    ds.Rows, ds.Columns = rows or pixels.shape[0], columns or pixels.shape[1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes() if pixel_data is None else pixel_data
    ds["PixelData"].VR = "OB" if syntax.is_compressed else "OW"
    for key in drop:
        delattr(ds, key)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def rle_bomb() -> bytes:
    """65535 x 65535 pixels at 16 bits declared, RLE Lossless, one 64-byte fragment of pixel data."""
    return dicom_bytes(syntax=RLELossless, rows=65535, columns=65535, pixel_data=encapsulate([b"\x00" * 64]))


def folder(root: Path, files: dict[str, bytes]) -> Path:
    """`root` holding `files` and labels.csv (path,label; labels alternate)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(files)))
    return root


def grey_png(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8), value).save(out, "PNG")
    return out.getvalue()


def study(tmp_path: Path, source: str, root: Path, *extra: str) -> list[str]:
    return ["--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"output_dir={tmp_path / 'out'}", f"data.source={source}", "data.domain=radiology", f"data.root={root}",
            *extra]


def good_pngs(n: int = 6) -> dict[str, bytes]:
    return {f"ok{i}.png": grey_png(40 + 20 * i) for i in range(n)}


def good_dicoms(n: int = 6) -> dict[str, bytes]:
    return {f"ok{i}.dcm": dicom_bytes(np.full((4, 4), 1000 * i, np.uint16)) for i in range(n)}


CASES = [
    pytest.param("dicom", {"bomb.dcm": rle_bomb(), **good_dicoms()},
                 "bomb.dcm: DICOM of 65535 x 65535 x 1 x 1 (rows x columns x frames x samples) = 4,294,836,225 "
                 "pixels, above data.max_pixels=50,000,000", id="RLE DICOM of 65535 x 65535"),
    pytest.param("dicom", {"nobits.dcm": dicom_bytes(drop=("BitsAllocated",)), **good_dicoms()},
                 "nobits.dcm: missing tag BitsAllocated, required to read the pixels",
                 id="DICOM without BitsAllocated"),
    pytest.param("csv", {"bomb.png": png_bomb(14000, 14000), **good_pngs()},
                 "bomb.png: PNG of 14000 x 14000 = 196,000,000 pixels, above data.max_pixels=50,000,000",
                 id="PNG of 14000 x 14000"),
    pytest.param("csv", {"bomb.png": png_bomb(10000, 10000), **good_pngs()},
                 "bomb.png: PNG of 10000 x 10000 = 100,000,000 pixels, above data.max_pixels=50,000,000",
                 id="PNG of 10000 x 10000"),
    pytest.param("csv", {"bomb.jpg": jpeg_bomb(10000, 10000), **good_pngs()},
                 "bomb.jpg: JPEG of 10000 x 10000 = 100,000,000 pixels, above data.max_pixels=50,000,000",
                 id="JPEG of 10000 x 10000"),
    pytest.param("csv", {"bomb.jpg": jpeg_bomb(65535, 65535), **good_pngs()},
                 "bomb.jpg: Image size (4294836225 pixels) exceeds limit", id="JPEG above PIL's own limit"),
]


@pytest.mark.parametrize("source, files, culprit", CASES)
def test_hostile_file_is_one_line_through_the_cli(source, files, culprit, tmp_path, capsys):
    assert len(next(iter(files.values()))) < 200_000  # the bombs are small files
    root = folder(tmp_path / "data", files)
    code = main(["run", *study(tmp_path, source, root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert f"{root / 'labels.csv'}, line 2: {root}/{culprit}" in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


def test_plan_counts_the_files_above_the_cap(tmp_path, capsys):
    files = {"big1.png": png_bomb(10000, 10000), **good_pngs(3), "big2.png": png_bomb(8000, 8000), **good_pngs(3)}
    root = folder(tmp_path / "data", files)
    code = main(["plan", *study(tmp_path, "csv", root, "data.max_pixels=60000000")])
    out = capsys.readouterr().out
    assert code == 2
    assert (f"2 image files above data.max_pixels; the first: {root / 'labels.csv'}, line 2: {root / 'big1.png'}: "
            "PNG of 10000 x 10000 = 100,000,000 pixels, above data.max_pixels=60,000,000") in out
    assert "8000 x 8000" not in out  # only the first is named
    # a cap above both: no problem with the files (the study's other checks decide: this folder's
    # splits are too small to hold both classes)
    main(["plan", *study(tmp_path, "csv", root, "data.max_pixels=100000000")])
    out = capsys.readouterr().out
    assert "Problems" in out and "max_pixels" not in out


# the bombs through the CLI in a child whose address space may grow by only 2 GiB once its libraries
# are loaded: an 8 GiB (DICOM) or 196 M pixel (PNG) allocation fails there instead of giving the one line
BOUNDED = """
import json, resource, sys
from experiments import cli, study
import medcommon.console
mapped = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + (2 << 30), resource.RLIM_INFINITY))
print(json.dumps([cli.main(argv) for argv in json.loads(sys.argv[1])]))
"""


@pytest.mark.slow  # the child loads torch, Lightning and MLflow: about 11 s of CPU
def test_bombs_stay_within_a_memory_limit(tmp_path):
    """Both bombs in one child (it loads torch once): each its one line and exit 2."""
    runs = []
    for source, name, data, good in [("dicom", "bomb.dcm", rle_bomb(), good_dicoms()),
                                     ("csv", "bomb.png", png_bomb(14000, 14000), good_pngs())]:
        root = folder(tmp_path / source, {name: data, **good})
        runs.append(["run", *study(tmp_path / f"{source}-study", source, root)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", BOUNDED, json.dumps(runs)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 0 and json.loads(done.stdout.strip().splitlines()[-1]) == [2, 2], done.stderr[-2000:]
    assert len(err) == 2 and "bomb.dcm: DICOM of 65535 x 65535" in err[0] and "bomb.png: PNG of 14000" in err[1]
    assert all("above data.max_pixels" in line for line in err)


def cfg(root: Path, channels: int, size: int) -> dict:
    return dict(domain="radiology", source="csv", root=str(root), image_size=size, seed=0, batch_size=4,
                test_fraction=0.3, val_fraction=0.3, channels=channels, cache_dir="none")


def read_all(data) -> list[np.ndarray]:
    return [data.reader(i).numpy() for i in range(len(data.labels))]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_image_is_read_at_its_depth(suffix, tmp_path):
    rng = np.random.default_rng(0)
    deep = [rng.integers(1000, 30000, (16, 16)).astype(np.uint16) for _ in range(8)]  # white under convert("L")
    files = {}
    for i, pixels in enumerate(deep):
        Image.fromarray(pixels).save(tmp_path / f"{i}{suffix}")
        files[f"{i}{suffix}"] = (tmp_path / f"{i}{suffix}").read_bytes()
    assert Image.open(tmp_path / f"0{suffix}").mode == "I;16"
    root = folder(tmp_path / "data", files)
    for channels in (1, 3):
        got = read_all(build_datamodule(cfg(root, channels, 16)))
        for image, pixels in zip(got, deep):
            want = np.round(pixels.astype(np.float64) / 65535 * 255)  # the independent computation
            assert image.shape == (channels, 16, 16) and (image == want).all()


def test_16_bit_png_resized_matches_its_8_bit_twin(tmp_path):
    rng = np.random.default_rng(1)
    eight = [rng.integers(0, 256, (40, 40)).astype(np.uint8) for _ in range(8)]
    deep, flat = {}, {}
    for i, pixels in enumerate(eight):  # x 257: the same values on the 16-bit scale
        for store, array in ((deep, pixels.astype(np.uint16) * 257), (flat, pixels)):
            out = io.BytesIO()
            Image.fromarray(array).save(out, "PNG")
            store[f"{i}.png"] = out.getvalue()
    got = read_all(build_datamodule(cfg(folder(tmp_path / "deep", deep), 1, 16)))
    want = read_all(build_datamodule(cfg(folder(tmp_path / "flat", flat), 1, 16)))
    for a, b in zip(got, want):  # resized in float vs in 8-bit steps: at most one level apart
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_rgb_png_stays_rgb(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = 200, 30
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    root = folder(tmp_path / "data", {f"{i}.png": out.getvalue() for i in range(8)})
    image = read_all(build_datamodule(cfg(root, 3, 8)))[0]
    assert (image.transpose(1, 2, 0) == pixels).all()


# Fuzzing: every outcome is an image of the asked shape or the readers' one-line ValueError, and
# memory stays within what the (small) cap allows
CAP = 64 * 64
BUDGET = 32 << 20  # bytes of Python/numpy allocations while reading one file under CAP


def outcome(check, reader, path: Path) -> str:
    """'image' or 'refused', with the refusal one line; anything else fails the property."""
    tracemalloc.start()
    try:
        check(path, "row 2", PixelCap(CAP))
        image = reader([path], 1, 8, max_pixels=CAP)(0)
        assert image.shape == (1, 8, 8) and image.dtype.is_floating_point is False
        result = "image"
    except ValueError as err:  # FileNotFoundError cannot happen: the file is there
        assert "\n" not in str(err) and str(path) in str(err)
        result = "refused"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < BUDGET
    return result


def valid_png(width: int = 12, height: int = 10, deep: bool = False) -> bytes:
    pixels = np.arange(width * height).reshape(height, width)
    out = io.BytesIO()
    Image.fromarray((pixels * 300).astype(np.uint16) if deep else (pixels % 256).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def with_ihdr(png: bytes, width: int, height: int, depth: int, colour: int) -> bytes:
    """`png` with its IHDR fields replaced (and its CRC made right, so the chunk is parsed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return png[:8] + png_chunk(b"IHDR", ihdr) + png[33:]


@given(data=st.binary(max_size=512))
def test_png_reader_on_arbitrary_bytes(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("png") / "x.png"
    path.write_bytes(data)
    assert outcome(check_image, ImageFileReader, path) == "refused"


@given(width=st.sampled_from([0, 1, 12, 64, 65, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1]),
       height=st.sampled_from([0, 1, 10, 64, 2 ** 16, 2 ** 32 - 1]), depth=st.sampled_from([0, 1, 8, 16, 3, 255]),
       colour=st.sampled_from([0, 2, 3, 4, 6, 1, 255]), deep=st.booleans(),
       flip=st.tuples(st.integers(0, 400), st.integers(0, 255)))
def test_png_reader_on_hostile_headers(width, height, depth, colour, deep, flip, tmp_path_factory):
    data = bytearray(with_ihdr(valid_png(deep=deep), width, height, depth, colour))
    at, value = flip
    if 33 <= at < len(data):  # one byte of the body changed too
        data[at] = value
    path = tmp_path_factory.mktemp("png") / "x.png"
    path.write_bytes(bytes(data))
    result = outcome(check_image, ImageFileReader, path)
    assert result == "refused" or width * height <= CAP  # accepted only within the cap


@given(data=st.binary(max_size=512), preamble=st.booleans())
def test_dicom_reader_on_arbitrary_bytes(data, preamble, tmp_path_factory):
    path = tmp_path_factory.mktemp("dcm") / "x.dcm"
    path.write_bytes((b"\x00" * 128 + b"DICM" if preamble else b"") + data)
    assert outcome(check_dicom, DicomReader, path) == "refused"


HOSTILE = st.sampled_from([0, 1, 3, 8, 16, 255, 65535])


@given(rows=HOSTILE, columns=HOSTILE, bits=st.sampled_from([1, 8, 12, 16, 32, 64, 0, 7]), stored=HOSTILE,
       samples=st.sampled_from([1, 3, 0, 2, 65535]), frames=st.sampled_from([None, "1", "2", "0", "65535", "x"]),
       representation=st.sampled_from([0, 1, 2]), rle=st.booleans(),
       drop=st.sampled_from([(), ("Rows",), ("BitsStored",), ("PixelRepresentation",), ("SamplesPerPixel",),
                             ("PhotometricInterpretation",), ("PixelData",)]))
def test_dicom_reader_on_hostile_headers(rows, columns, bits, stored, samples, frames, representation, rle, drop,
                                         tmp_path_factory):
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    tags = dict(BitsAllocated=bits, BitsStored=stored, SamplesPerPixel=samples, PixelRepresentation=representation)
    if frames is not None:
        tags["NumberOfFrames"] = "9" if frames == "x" else frames  # pydicom refuses to write "x"
    data = dicom_bytes(pixels, syntax=RLELossless if rle else ExplicitVRLittleEndian, rows=rows, columns=columns,
                       pixel_data=encapsulate([pixels.tobytes()]) if rle else None, drop=drop, **tags)
    if frames == "x":  # the element (0028,0008) IS "9 " made "x " in the file's bytes
        data = data.replace(b"\x28\x00\x08\x00IS\x02\x009 ", b"\x28\x00\x08\x00IS\x02\x00x ")
    path = tmp_path_factory.mktemp("dcm") / "x.dcm"
    path.write_bytes(data)
    result = outcome(check_dicom, DicomReader, path)
    declared = rows * columns * samples * int(frames if frames and frames.isdigit() else 1)
    assert result == "refused" or (declared <= CAP and not drop)


def test_fuzz_finds_the_valid_files(tmp_path):
    """The properties can tell an accepted file from a refused one: valid files come through."""
    (tmp_path / "a.png").write_bytes(valid_png(deep=True))
    assert outcome(check_image, ImageFileReader, tmp_path / "a.png") == "image"
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    (tmp_path / "a.dcm").write_bytes(dicom_bytes(pixels))
    assert outcome(check_dicom, DicomReader, tmp_path / "a.dcm") == "image"
    got = DicomReader([tmp_path / "a.dcm"], 1, 8)(0)[0].numpy()
    assert (got == np.round(pixels / 65535 * 255)).all()
    assert pydicom.dcmread(tmp_path / "a.dcm").BitsStored == 16
