"""`medtransfer weights`: which ImageNet files a config needs, hash checks, installing from a folder.

The tests build their own weight files (real state dicts) and name them the way torchvision does,
`<name>-<first 8 hex digits of the file's sha256>.pth`; the architecture registry is pointed at
those names. Nothing is downloaded.
"""
import hashlib
import io
from types import SimpleNamespace

import pytest
import torch
import torchvision.models as tvm

from experiments.cli import main
from experiments.design.config import preset_path
from lightning_modules import architectures
from lightning_modules.model import build_classifier


def torchvision_named(state: dict, stem: str) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth", data


@pytest.fixture
def weight_files(tmp_path, monkeypatch):
    """A good MobileNetV3-Small file and a corrupt ResNet-18 file in `downloads/`; $TORCH_HOME empty."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    good_name, good = torchvision_named(tvm.mobilenet_v3_small().state_dict(), "mobilenet_v3_small")
    bad_name, bad = torchvision_named({"w": torch.arange(1000.0)}, "resnet18")
    downloads = tmp_path / "downloads" / "nested"
    downloads.mkdir(parents=True)
    (downloads / good_name).write_bytes(good)
    (downloads / bad_name).write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))  # one bit flipped
    for arch, name in (("mobilenet_v3_small", good_name), ("resnet18", bad_name)):
        monkeypatch.setitem(architectures.IMAGENET_WEIGHTS, arch,
                            SimpleNamespace(url=f"https://download.example/models/{name}"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    return SimpleNamespace(downloads=downloads.parent, good=checkpoints / good_name, good_bytes=good,
                           bad=checkpoints / bad_name)


def weights_cli(*args):
    models = ("models=[{name: m, arch: mobilenet_v3_small, init: imagenet, dev_set: d1, instance: 0},"
              "{name: r, arch: resnet18, init: imagenet, dev_set: d1, instance: 0},"
              "{name: t, arch: resnet18, init: random, dev_set: d1, instance: 0}]")
    return main(["weights", "--config", str(preset_path("smoke")), *args, models])


def test_lists_the_files_the_config_needs_and_where_they_go(weight_files, capsys):
    assert weights_cli() == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["missing", "mobilenet_v3_small", weight_files.good.name]
    assert f"-> {weight_files.good}" in out and f"-> {weight_files.bad}" in out
    assert "(2 models)" not in out and "(1 model)" in out  # resnet18's random model needs no file
    assert err.count("medtransfer: error:") == 1 and "2 of 2 ImageNet weight files" in err


def test_from_copies_a_good_file_and_refuses_a_corrupt_one(weight_files, capsys):
    assert weights_cli("--from", str(weight_files.downloads)) == 2  # resnet18's file is still unusable
    out, err = capsys.readouterr()
    assert weight_files.good.read_bytes() == weight_files.good_bytes
    assert not weight_files.bad.exists()
    assert f"refused   {weight_files.downloads}/nested/{weight_files.bad.name}: corrupt" in out
    assert out.splitlines()[2].startswith(f"ok       mobilenet_v3_small {weight_files.good.name}")
    assert "1 of 2 ImageNet weight files missing or corrupt: " + weight_files.bad.name in err
    # the installed file is what an `imagenet` model now starts from
    model = build_classifier("mobilenet_v3_small", "imagenet", "binary", 1, 3)
    expected = torch.load(weight_files.good, weights_only=True)["features.0.0.weight"]
    torch.testing.assert_close(model.backbone.features[0][0].weight, expected)


def test_a_corrupt_file_in_place_is_reported_and_replaced_by_a_good_one(weight_files, capsys):
    weight_files.good.parent.mkdir(parents=True)
    weight_files.good.write_bytes(weight_files.good_bytes[:1000])  # truncated download
    assert weights_cli() == 2
    assert capsys.readouterr().out.splitlines()[0].startswith("corrupt  mobilenet_v3_small")
    main(["weights", "--from", str(weight_files.downloads)])  # without --config: every known file
    out = capsys.readouterr().out
    assert f"copied    {weight_files.downloads}/nested/{weight_files.good.name} -> {weight_files.good}" in out
    assert weight_files.good.read_bytes() == weight_files.good_bytes
    assert not list(weight_files.good.parent.glob("*.tmp"))


def test_from_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["weights", "--from", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"medtransfer: error: {tmp_path / 'absent'}: folder not found"]
