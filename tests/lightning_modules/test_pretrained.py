"""ImageNet weights from local files only, and weights-only checkpoint loading."""
from fractions import Fraction

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from skimage import data as skdata

from lightning_modules import build_classifier
from lightning_modules.pretrained import (IMAGENET_MEAN, IMAGENET_STD, MissingWeightsError,
                                          efficientnet_lite0_imagenet)

# File names torchvision downloads these ImageNet weights to (facts of torchvision 0.29), and each head.
CACHE_FILES = {
    "resnet18": ("resnet18-f37072fd.pth", lambda: tvm.resnet18(), "fc."),
    "densenet121": ("densenet121-a639ec97.pth", lambda: tvm.densenet121(), "classifier."),
    "inception_v3": ("inception_v3_google-0cc3c7bd.pth",
                     lambda: tvm.inception_v3(aux_logits=True, init_weights=False), "fc."),
    "mobilenet_v3_small": ("mobilenet_v3_small-047dcff4.pth", lambda: tvm.mobilenet_v3_small(),
                           "classifier.3."),
}


def test_missing_weights_name_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        build_classifier("resnet50", "imagenet", "binary", 1, 3)
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "\n" not in message


@pytest.mark.parametrize("arch", list(CACHE_FILES))
def test_cached_torchvision_weights_are_loaded(arch, tmp_path, monkeypatch):
    file_name, make, head = CACHE_FILES[arch]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    state = written = make().state_dict()
    if arch == "densenet121":  # the published file uses the old layer names norm.1, conv.2, ...
        for old, new in [("norm.1", "norm1"), ("norm.2", "norm2"), ("conv.1", "conv1"), ("conv.2", "conv2")]:
            written = {k.replace(f".{new}.", f".{old}."): v for k, v in written.items()}
        assert any(".norm.1." in k for k in written)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(written, checkpoints / file_name)
    loaded = build_classifier(arch, "imagenet", "binary", 1, 3).backbone.state_dict()
    compared = [k for k in loaded if not k.startswith(head)]
    assert len(compared) == len(loaded) - 2  # everything but the new head's weight and bias
    for key in compared:
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0)
    assert loaded[head + "weight"].shape == (1, state[head + "weight"].shape[1])


def imagenet_class(model: torch.nn.Module, photo) -> int:
    """ImageNet prediction for an HxWx3 uint8 photo: short side to 224, centre crop, ImageNet statistics."""
    image = torch.as_tensor(photo).permute(2, 0, 1).float().div(255).unsqueeze(0)
    height, width = image.shape[-2:]
    scale = 224 / min(height, width)
    image = F.interpolate(image, size=(round(height * scale), round(width * scale)), mode="bilinear",
                          antialias=True, align_corners=False)
    top, left = (image.shape[2] - 224) // 2, (image.shape[3] - 224) // 2
    image = image[:, :, top:top + 224, left:left + 224]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    image = (image - mean) / std
    with torch.no_grad():
        return int(model.eval()(image).argmax(dim=1))


def test_efficientnet_lite0_weights_are_real_imagenet_weights():
    reference = timm.create_model("efficientnet_lite0", pretrained=False)
    efficientnet_lite0_imagenet(reference)
    assert imagenet_class(reference, skdata.chelsea()) in range(281, 286)  # tabby .. Egyptian cat
    assert imagenet_class(reference, skdata.coffee()) == 967  # espresso
    ours = build_classifier("efficientnet_lite0", "imagenet", "binary", 1, 3).backbone.state_dict()
    expected = reference.state_dict()
    body = [k for k in ours if not k.startswith("classifier.")]
    assert len(body) == len(expected) - 2
    for key in body:
        torch.testing.assert_close(ours[key], expected[key], rtol=0, atol=0)


def test_checkpoint_init_restores_the_model(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "multilabel", 3, 1).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    restored = build_classifier("tiny_cnn", f"checkpoint:{tmp_path / 'model.pt'}", "multilabel", 3, 1).eval()
    images = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(restored(images), model(images), rtol=0, atol=0)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: not a weights-only checkpoint") as err:
        build_classifier("tiny_cnn", f"checkpoint:{path}", "binary", 1, 3)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: checkpoint file not found"):
        build_classifier("tiny_cnn", f"checkpoint:{tmp_path / 'missing.pt'}", "binary", 1, 3)
