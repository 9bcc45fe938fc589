"""Synthetic domains: determinism, label structure, the label signal, and the on-disk cache."""
import numpy as np
import pandas as pd
import pytest
import torch

from datamodules import build_datamodule
from datamodules.synthetic import GENERATORS
from datamodules.synthetic.chestxray import LABEL_NAMES as CHEST_LABELS
from datamodules.synthetic.render import render_ellipses


@pytest.mark.parametrize("domain", list(GENERATORS))
def test_generators_are_deterministic_by_seed(domain):
    generate = GENERATORS[domain][0]
    a = generate(num_patients=6, images_per_patient=2, size=16, seed=3)
    b = generate(num_patients=6, images_per_patient=2, size=16, seed=3)
    c = generate(num_patients=6, images_per_patient=2, size=16, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.uint8 and a[0].shape[0] == 12 and a[0].shape[-2:] == (16, 16)
    assert a[2].tolist() == [p for p in range(6) for _ in range(2)]


def test_chest_no_finding_is_the_absence_of_every_finding():
    _, labels, _ = GENERATORS["radiology"][0](num_patients=40, images_per_patient=3, size=16, seed=0)
    assert labels.shape == (120, len(CHEST_LABELS)) and CHEST_LABELS[-1] == "No Finding"
    for row in labels.tolist():
        assert row[-1] == (1 if sum(row[:-1]) == 0 else 0)
    assert labels[:, :-1].sum(1).max() >= 2  # findings co-occur


def test_render_ellipses_matches_a_direct_evaluation():
    centres = torch.tensor([[[7.3, 9.6], [2.0, 14.5]]])
    radii, aspect, angle = torch.tensor([[3.0, 2.0]]), torch.tensor([[1.5, 1.0]]), torch.tensor([[0.7, 0.0]])
    weight = torch.tensor([[1.0, 0.5]])
    out = render_ellipses(centres, radii, aspect, angle, weight, 16, sharpness=3.0)[0]
    expected = np.zeros((16, 16))
    for (cx, cy), r, a, t, w in zip(centres[0].tolist(), radii[0].tolist(), aspect[0].tolist(),
                                    angle[0].tolist(), weight[0].tolist()):
        for py in range(16):
            for px in range(16):
                dx, dy = px + 0.5 - cx, py + 0.5 - cy
                u = (dx * np.cos(t) + dy * np.sin(t)) / (r * a)
                v = (-dx * np.sin(t) + dy * np.cos(t)) / (r / a)
                expected[py, px] += w * np.clip((1 - np.hypot(u, v)) * 3.0 + 0.5, 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def _centre_darkness(images):
    grey = images.float().mean(1)
    s = grey.shape[-1]
    return (255 - grey[:, s // 4: 3 * s // 4, s // 4: 3 * s // 4]).mean((1, 2)).numpy()


def test_pathology_tumour_patches_have_darker_centres():
    images, labels, _ = GENERATORS["pathology"][0](num_patients=60, images_per_patient=2, size=32, seed=1)
    dark = _centre_darkness(images)
    y = labels.numpy()
    assert 0.3 < y.mean() < 0.7
    assert dark[y == 1].mean() > dark[y == 0].mean() + 5


def test_fundus_referable_eyes_carry_lesions_and_outside_fov_is_black():
    images, labels, _ = GENERATORS["ophthalmology"][0](num_patients=40, images_per_patient=2, size=32, seed=2)
    assert images[:, :, 0, 0].max() == 0 and images[:, :, -1, -1].max() == 0  # corners outside the FOV
    assert (images.float().mean((0, 1))[16, 16] > 40)
    # haemorrhages and microaneurysms darken green inside the FOV
    y = labels.numpy()
    red_ratio = (images[:, 0].float() / (images[:, 1].float() + 1))[:, 8:24, 8:24].amax((1, 2)).numpy()
    assert red_ratio[y == 1].mean() > red_ratio[y == 0].mean()


def test_synthetic_sets_are_cached_by_parameters(tmp_path):
    cfg = dict(domain="pathology", source="synthetic", image_size=16, num_patients=30, images_per_patient=2,
               seed=5, dev_set="d1", cache_dir=str(tmp_path))
    first = build_datamodule(cfg)
    record, = tmp_path.glob("*.pt")
    images_file = record.with_suffix(".images")
    expected, _, _ = GENERATORS["pathology"][0](num_patients=30, images_per_patient=2, size=16, seed=5)
    assert images_file.read_bytes() == expected.numpy().tobytes()  # raw uint8 NCHW, as generated
    x, _ = first.dataset("train")[0]
    torch.testing.assert_close(x, expected[first.indices["train"][0]].float() / 255)
    build_datamodule({**cfg, "seed": 6})
    build_datamodule({**cfg, "signal": 0.5})
    assert len(list(tmp_path.glob("*.pt"))) == 3 and len(list(tmp_path.glob("*.images"))) == 3
    assert not list(tmp_path.glob("*.tmp"))
    # a cached entry is read back, not regenerated: its files stay as they are
    stamp = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (record, images_file)]
    build_datamodule(cfg)  # a new DataCache: the disk is read
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (record, images_file)] == stamp
    # unless its images no longer match the record's checksum: generated again, never read
    images_file.write_bytes(bytes([7]) * images_file.stat().st_size)
    again = build_datamodule(cfg)
    x, _ = again.dataset("val")[1]
    torch.testing.assert_close(x, expected[again.indices["val"][1]].float() / 255)
    assert images_file.read_bytes() == expected.numpy().tobytes()


def test_a_truncated_cache_entry_is_regenerated(tmp_path):
    cfg = dict(domain="radiology", source="synthetic", image_size=16, num_patients=20, images_per_patient=2,
               seed=1, dev_set="d1", cache_dir=str(tmp_path))
    build_datamodule(cfg)
    images_file, = tmp_path.glob("*.images")
    whole = images_file.read_bytes()
    images_file.write_bytes(whole[:100])  # a killed copy, say
    data = build_datamodule(cfg)
    assert images_file.read_bytes() == whole
    assert data.dataset("train")[0][0].shape == (1, 16, 16)


def test_stored_images_read_slices_and_survive_pickling(tmp_path):
    import pickle

    from datamodules.synthetic.cache import cached_generate
    params = dict(domain="ophthalmology", num_patients=5, images_per_patient=3, size=8, seed=2, signal=1.0)
    stored, labels, _ = cached_generate(GENERATORS["ophthalmology"][0], params, tmp_path)
    in_memory, labels_again, _ = cached_generate(GENERATORS["ophthalmology"][0], params, None)
    assert isinstance(in_memory, torch.Tensor) and torch.equal(labels, labels_again)
    assert stored.shape == tuple(in_memory.shape) == (15, 3, 8, 8)
    assert torch.equal(stored.read(4, 11), in_memory[4:11])
    copy = pickle.loads(pickle.dumps(stored))
    assert all(torch.equal(copy(i), in_memory[i]) for i in range(15))


def test_datamodule_interface_and_float_images(tmp_path):
    data = build_datamodule(dict(domain="radiology", source="synthetic", image_size=16, num_patients=40,
                                 images_per_patient=3, seed=0, dev_set="d2", batch_size=8, cache_dir="none"))
    assert (data.task, data.num_outputs, data.channels) == ("multilabel", 6, 1)
    assert data.label_names == CHEST_LABELS
    x, y = next(iter(data.train_dataloader()))
    assert x.dtype == torch.float32 and x.shape == (8, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    j = data.indices["train"]
    np.testing.assert_array_equal(sorted(data.manifest.iloc[j]["partition"].unique()), ["d2"])
    path = data.save_manifest(tmp_path / "split.csv")
    saved = pd.read_csv(path)
    assert list(saved.columns[:4]) == ["sample_id", "patient_id", "partition", "stage"]
    assert len(saved) == 120


def test_split_follows_data_seed_and_order_follows_training_seed():
    cfg = dict(domain="pathology", source="synthetic", image_size=16, num_patients=40, images_per_patient=2,
               seed=1, dev_set="d1", batch_size=64, cache_dir="none")
    a, b = build_datamodule(cfg), build_datamodule(cfg)
    assert a.manifest.equals(b.manifest)

    def first_labels(data, training_seed):
        torch.manual_seed(training_seed)
        return next(iter(data.train_dataloader()))[1].tolist()

    train_labels = a.labels[a.indices["train"]].tolist()
    order = first_labels(a, 0)
    assert sorted(order) == sorted(train_labels)
    assert order == first_labels(b, 0)
    assert any(first_labels(b, s) != order for s in (1, 2, 3))


def test_the_default_cache_folder_is_read_when_the_data_are_built(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "late"))  # set after every import
    build_datamodule(dict(domain="pathology", source="synthetic", image_size=8, num_patients=20,
                          images_per_patient=2, seed=11, dev_set="d1", cache_dir=""))
    assert len(list((tmp_path / "late").glob("pathology-*.images"))) == 1
