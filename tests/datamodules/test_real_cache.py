"""Real data decoded once into the cache and indexed once: later runs read neither the image files
nor the index file's rows again, and get the same samples."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datamodules import DomainData
from datamodules.base import ReaderDataset


def write_folder(root, n=30):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, 20, 20), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(pixels[i]).save(root / f"{i}.png")
    pd.DataFrame({"path": [f"{i}.png" for i in range(n)], "label": [i % 2 for i in range(n)]}).to_csv(
        root / "labels.csv", index=False)
    return pixels


def cfg(root, cache, size=10):
    return dict(domain="dermatology", source="csv", root=str(root), image_size=size, seed=0, batch_size=4,
                test_fraction=0.2, val_fraction=0.2, channels=1, cache_dir=str(cache))


def samples(data):
    data.prepare()
    ds = ReaderDataset(data.reader, data.labels, np.arange(len(data.manifest)))
    return np.stack([ds[i][0].numpy() for i in range(len(ds))]), data.labels.numpy(), data.manifest


def test_second_run_reads_the_cache_not_the_files(tmp_path):
    pixels = write_folder(tmp_path / "data")
    first = samples(DomainData(cfg(tmp_path / "data", tmp_path / "cache")))
    # the decoded images are the files resized to 10 px (PIL's bilinear, as the reader resizes)
    expected = [np.asarray(Image.fromarray(p).resize((10, 10), Image.BILINEAR, reducing_gap=2.0)) / 255
                for p in pixels]
    np.testing.assert_allclose(first[0][:, 0], np.stack(expected), atol=1e-6)
    entries = sorted(p.name.split("-", 2)[2].split(".", 1)[1] for p in (tmp_path / "cache").iterdir())
    assert entries == ["images", "index.npz", "pt"]
    for png in (tmp_path / "data").glob("*.png"):
        png.unlink()  # a later run must not need the image files any more
    second = samples(DomainData(cfg(tmp_path / "data", tmp_path / "cache")))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    pd.testing.assert_frame_equal(first[2], second[2])
    # the index read back serves a plan without any file: same manifest
    _, manifest = DomainData(cfg(tmp_path / "data", tmp_path / "cache")).index()
    pd.testing.assert_frame_equal(manifest, first[2])
    # another image size needs the files again (the index has no images at 12 px)
    with pytest.raises(FileNotFoundError, match=r"labels.csv, line 2: image file .*0.png not found"):
        DomainData(cfg(tmp_path / "data", tmp_path / "cache", size=12)).prepare()


def test_changed_index_file_is_indexed_again(tmp_path):
    write_folder(tmp_path / "data")
    samples(DomainData(cfg(tmp_path / "data", tmp_path / "cache")))
    table = pd.read_csv(tmp_path / "data" / "labels.csv")
    table.loc[3, "label"] = 7
    table.to_csv(tmp_path / "data" / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels.csv, line 5: unknown label '7'"):
        DomainData(cfg(tmp_path / "data", tmp_path / "cache")).prepare()


def test_a_failed_decode_leaves_no_entry(tmp_path):
    write_folder(tmp_path / "data")
    bad = tmp_path / "data" / "5.png"
    raw = bytearray(bad.read_bytes())
    raw[60:200] = bytes(140)  # pixel data broken, header and end marker intact: only decoding finds it
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"5.png: unreadable image"):
        DomainData(cfg(tmp_path / "data", tmp_path / "cache")).prepare()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix in (".images", ".pt", ".tmp")]


def test_a_large_reduction_stays_close_to_the_full_bilinear_filter(tmp_path):
    from datamodules.readers.images import ImageFileReader

    y, x = np.mgrid[0:512, 0:512]
    pixels = (127 + 60 * np.sin(x / 23.0) + 60 * np.cos(y / 31.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    exact = np.asarray(Image.fromarray(pixels).resize((64, 64), Image.BILINEAR), dtype=float)
    for name in ("big.png", "big.jpg"):
        got = ImageFileReader([tmp_path / name], 1, 64)(0)[0].numpy().astype(float)
        assert np.abs(got - exact).mean() < 1.5 and np.abs(got - exact).max() < 8, name


def test_a_replaced_image_is_decoded_again_and_changes_the_fingerprint(tmp_path):
    pixels = write_folder(tmp_path / "data")
    first = DomainData(cfg(tmp_path / "data", tmp_path / "cache", size=20))
    before, content = samples(first)[0], first.fingerprint()
    Image.fromarray(255 - pixels[4]).save(tmp_path / "data" / "4.png")  # same name, same labels file
    again = DomainData(cfg(tmp_path / "data", tmp_path / "cache", size=20))
    after = samples(again)[0]
    assert again.fingerprint() != content
    np.testing.assert_allclose(after[4, 0], (255 - pixels[4]) / 255, atol=1e-6)  # the new file, not the cache
    np.testing.assert_array_equal(np.delete(after, 4, 0), np.delete(before, 4, 0))
    assert len(list((tmp_path / "cache").glob("*.images"))) == 2  # one entry per content
