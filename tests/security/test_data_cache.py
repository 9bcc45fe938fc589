"""The real-data cache is untrusted: a damaged or tampered index, images file or record is reported
in one warning line, treated as absent (read from the source again and rewritten), and never used."""
import io
import os

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

from datamodules import DomainData
from datamodules.real_cache import DataCache
from experiments.cli import main
from experiments.design.config import preset_path

N = 24


def write_folder(root):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (N, 12, 12), dtype=np.uint8)
    for i in range(N):
        Image.fromarray(pixels[i]).save(root / f"{i}.png")
    pd.DataFrame({"path": [f"{i}.png" for i in range(N)], "label": np.arange(N) % 2}).to_csv(
        root / "labels.csv", index=False)
    return root


def data_keys(root, cache):
    return [f"data.root={root}", f"data.cache_dir={cache}", "data.source=csv", "data.domain=dermatology",
            "data.channels=1", "data.image_size=12", "data.test_fraction=0.25", "data.val_fraction=0.3"]


def run(tmp_path, capsys, *data):
    """`medtransfer run` of a one-epoch FGSM smoke study on `data`: (exit code, stderr lines)."""
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 f"output_dir={tmp_path / 'out'}", "train.max_epochs=1", "bootstrap_resamples=20", "pairs=whitebox",
                 "attacks=[{name: fgsm, eps: [0.02]}]", *data])
    return code, capsys.readouterr().err.splitlines()


def entry(cache, suffix):
    found = [p for p in cache.iterdir() if p.name.endswith(suffix)]
    assert len(found) == 1, found
    return found[0]


def warnings(err):
    return [line for line in err if "damaged cache entry" in line]


def source_pixels(root):
    return np.stack([np.asarray(Image.open(root / f"{i}.png")) for i in range(N)])


def tamper_index(path):
    """Rewrite the index entry as a valid .npz with every label inverted and the old checksum."""
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["labels"] = 1 - arrays["labels"]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


@pytest.mark.slow
def test_damaged_index_images_and_record_entries_are_read_again_through_the_cli(tmp_path, capsys):
    root, cache = write_folder(tmp_path / "data"), tmp_path / "cache"
    code, err = run(tmp_path, capsys, *data_keys(root, cache))
    assert code == 0 and not warnings(err)
    index, images = entry(cache, ".index.npz"), entry(cache, ".images")
    record, good_images = images.with_suffix(".pt"), images.read_bytes()

    tamper_index(index)  # a valid .npz, every label inverted, the old checksum
    code, err = run(tmp_path, capsys, *data_keys(root, cache))
    assert code == 0 and not any("Traceback" in line for line in err)
    assert warnings(err) == [f"warning: {index}: damaged cache entry (ValueError: checksum mismatch); "
                             "indexing the data again"]
    with np.load(index) as npz:  # rewritten from the labels file
        np.testing.assert_array_equal(npz["labels"], np.arange(N) % 2)

    raw = bytearray(good_images)
    raw[100:110] = bytes(10)  # ten pixels zeroed, size unchanged
    images.write_bytes(bytes(raw))
    code, err = run(tmp_path, capsys, *data_keys(root, cache))
    assert code == 0 and warnings(err) == [f"warning: {record}: damaged cache entry (ValueError: checksum "
                                           "mismatch); decoding the images again"]
    assert images.read_bytes() == good_images  # decoded again from the PNGs

    record.write_bytes(b"not a torch file")
    code, err = run(tmp_path, capsys, *data_keys(root, cache))
    assert code == 0 and len(warnings(err)) == 1 and warnings(err)[0].startswith(f"warning: {record}: damaged")
    assert images.read_bytes() == good_images and torch.load(record, weights_only=True)["sha256"]
    code, err = run(tmp_path, capsys, *data_keys(root, cache))
    assert code == 0 and not warnings(err)  # the rewritten entries are whole


def test_a_flipped_bit_in_the_images_file_is_found_in_a_new_process(tmp_path, capsys):
    root, cache = write_folder(tmp_path / "data"), tmp_path / "cache"
    cfg = dict(domain="dermatology", source="csv", root=str(root), image_size=12, seed=0, channels=1,
               test_fraction=0.25, cache_dir=str(cache))
    DomainData(cfg).prepare()
    images = entry(cache, ".images")
    stat = images.stat()
    raw = bytearray(images.read_bytes())
    raw[37] ^= 0x10  # bit rot: one bit, the file's size and times unchanged
    images.write_bytes(bytes(raw))
    os.utime(images, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    data = DomainData(cfg).prepare()  # a new DataCache, as in a new process
    err = capsys.readouterr().err.splitlines()
    assert len(warnings(err)) == 1 and "checksum mismatch" in warnings(err)[0]
    decoded = np.stack([data.reader(i)[0].numpy() for i in range(N)])
    np.testing.assert_array_equal(decoded, source_pixels(root))  # the source's pixels, not the damaged ones


@pytest.fixture(scope="module")
def cached_index(tmp_path_factory):
    """(data config, index entry, its bytes) of a decoded folder."""
    tmp_path = tmp_path_factory.mktemp("index")
    root, cache = write_folder(tmp_path / "data"), tmp_path / "cache"
    cfg = dict(domain="dermatology", source="csv", root=str(root), image_size=12, seed=0, channels=1,
               test_fraction=0.25, cache_dir=str(cache))
    DomainData(cfg).prepare()
    index = entry(cache, ".index.npz")
    return cfg, index, index.read_bytes()


@given(key=st.sampled_from(["labels", "patients", "sample_ids", "meta", "content"]),
       position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_changed_byte_of_a_stored_array_is_refused(cached_index, key, position, value):
    cfg, index, good = cached_index
    index.write_bytes(good)
    with np.load(index) as npz:
        arrays = {name: npz[name] for name in npz.files}
    raw = bytearray(arrays[key].tobytes())
    assume(raw[position % len(raw)] != value)
    raw[position % len(raw)] = value
    arrays[key] = np.frombuffer(bytes(raw), arrays[key].dtype).reshape(arrays[key].shape)
    with open(index, "wb") as handle:
        np.savez(handle, **arrays)  # a valid .npz (its zip CRCs match), the old checksum
    assert DataCache().read_index(index) is None  # refused, with a warning line
    data, _ = DomainData(cfg).index()  # a new DataCache: read from the labels file instead
    np.testing.assert_array_equal(data.labels.numpy(), np.arange(N) % 2)
    assert [str(s) for s in data.sample_ids] == [f"{i}.png" for i in range(N)]
