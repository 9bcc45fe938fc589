"""Every registered architecture on tiny inputs: 1 and 3 channels, each task layout."""
import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules import ARCHITECTURES, build_classifier

LAYOUTS = {"binary": (1, 1), "multiclass": (4, 4), "multilabel": (3, 3)}  # task: (num_outputs, logits)


def by_hand(arch: str, backbone, images: torch.Tensor) -> torch.Tensor:
    """Grey -> RGB, upsampling to the registered minimum size, the registered normalisation, the backbone."""
    spec = ARCHITECTURES[arch]
    pixels = images.expand(-1, 3, -1, -1)
    if spec.min_size > images.shape[-1]:
        pixels = F.interpolate(pixels, size=(spec.min_size, spec.min_size), mode="bilinear",
                               align_corners=False)
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    return backbone((pixels - mean) / std)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_architecture_follows_the_model_contract(arch):
    """Each task layout gives its number of logits; 1 and 3 channels are both exercised; grey input
    equals its RGB replication; normalisation and upsampling happen inside the model."""
    torch.manual_seed(0)
    images = torch.rand(2, 1, 16, 16)
    for task, chans in [("binary", 1), ("multiclass", 3), ("multilabel", 1)]:
        num_outputs, logits = LAYOUTS[task]
        model = build_classifier(arch, "random", task, num_outputs, in_chans=chans).eval()
        with torch.no_grad():
            out = model(images.expand(-1, chans, -1, -1))
            expected = by_hand(arch, model.backbone, images)
        assert out.shape == (2, logits)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        if task == "binary":
            rgb = build_classifier(arch, "random", task, num_outputs, in_chans=3).eval()
            rgb.load_state_dict(model.state_dict())
            with torch.no_grad():
                torch.testing.assert_close(rgb(images.repeat(1, 3, 1, 1)), out, rtol=1e-4, atol=1e-5)


def test_tiny_cnn_trains_on_the_smallest_image_sizes():
    """`data.image_size` may be 1: an input smaller than the tiny CNN's two 2x2 poolings is upsampled to
    its registered minimum (the result of upsampling by hand), not a failure once training has begun.
    (The other architectures take 1-3 px inputs as they are or upsample them to their own minimum.)"""
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "binary", 1, in_chans=3)
    for size in (1, 2, 3):
        images = torch.rand(2, 3, size, size)
        model.train()
        model(images).sum().backward()
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(images), by_hand("tiny_cnn", model.backbone, images), rtol=1e-4, atol=1e-5)


def test_random_init_is_he_normal():
    torch.manual_seed(0)
    conv = build_classifier("resnet18", "random", "binary", 1, 3).backbone.conv1.weight
    fan_in = 3 * 7 * 7
    assert conv.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert conv.mean().item() == pytest.approx(0.0, abs=0.01)


def test_other_channel_counts_start_as_the_channel_mean():
    torch.manual_seed(0)
    five = build_classifier("tiny_cnn", "random", "binary", 1, in_chans=5).eval()
    grey = build_classifier("tiny_cnn", "random", "binary", 1, in_chans=1).eval()
    grey.load_state_dict({k: v for k, v in five.state_dict().items() if not k.startswith("to_rgb")})
    images = torch.rand(3, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(five(images), grey(images.mean(dim=1, keepdim=True)), rtol=1e-4, atol=1e-5)


def test_small_non_square_input_is_upsampled_keeping_aspect():
    model = build_classifier("inception_v3", "random", "binary", 1, 3).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.rand(1, 3, 20, 40))
    assert seen == [(1, 3, 75, 150)]


def test_wrong_channel_count_is_one_line_error():
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3)
    with pytest.raises(ValueError, match=r"expects N x 3 x H x W input, got shape \(2, 1, 16, 16\)$"):
        model(torch.rand(2, 1, 16, 16))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError) as err:
        build_classifier("resnet9000", "random", "binary", 1, 3)
    message = str(err.value)
    assert "'resnet9000'" in message and "\n" not in message
    assert all(name in message for name in ["tiny_cnn", "resnet18", "resnet50", "densenet121", "inception_v3",
                                            "efficientnet_lite0", "mobilenet_v3_small"])
    with pytest.raises(ValueError, match=r"unknown init 'imagenet21k'; valid: imagenet, random, checkpoint:"):
        build_classifier("tiny_cnn", "imagenet21k", "binary", 1, 3)
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        build_classifier("tiny_cnn", "random", "regression", 1, 3)
