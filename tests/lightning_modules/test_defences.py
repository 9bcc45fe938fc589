"""Input defences: each against an independent implementation (PIL, SciPy, counting), BPDA gradients
through every defence, seeded randomness and one-line parameter errors."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lightning_modules import build_classifier
from lightning_modules.defences import DEFENCES, defence_params, defended

EXAMPLES = {"jpeg": {"quality": 30}, "bit_depth": {"bits": 3}, "median": {"kernel": 3},
            "gaussian": {"sigma": 1.0}, "resize": {"min_scale": 0.7, "seed": 4}}


def images(n=3, channels=3, size=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, channels, 5, 5, generator=generator), size=size,
                                             mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.rand(n, channels, size, size, generator=generator)).clamp(0, 1)


def defence(name):
    return defended(torch.nn.Identity(), {"name": name, **EXAMPLES[name]}).defence


def test_every_registered_defence_has_an_example():
    assert set(EXAMPLES) == set(DEFENCES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_bpda_gives_nonzero_gradients_through_every_defence(name):
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3).eval()
    x = images().requires_grad_(True)
    defended(model, {"name": name, **EXAMPLES[name]})(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets a gradient


@pytest.mark.parametrize("name", ["jpeg", "bit_depth"])
def test_straight_through_gradient_is_the_models_gradient_at_the_transformed_image(name):
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3).eval()
    x = images().requires_grad_(True)
    defended(model, {"name": name, **EXAMPLES[name]})(x).sum().backward()
    transformed = defence(name)(x.detach()).requires_grad_(True)
    model(transformed).sum().backward()
    torch.testing.assert_close(x.grad, transformed.grad)


def test_jpeg_is_a_real_jpeg_round_trip_like_pil():
    x = images(channels=3, size=32)
    ours = defence("jpeg")(x)
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pil = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=30)
        pil.append(np.asarray(Image.open(buffer)).astype(np.float32) / 255)
    pil = torch.from_numpy(np.stack(pil)).permute(0, 3, 1, 2)
    change = (pil - x).abs().mean()
    assert change > 2 / 255  # quality 30 visibly changes these images
    assert (ours - pil).abs().mean() < 0.25 * change  # same codec up to encoder details


def test_jpeg_of_grey_and_four_channel_images_keeps_the_layout():
    for channels in (1, 4):
        out = defence("jpeg")(images(channels=channels))
        assert out.shape == (3, channels, 20, 20)
        assert 0 < (out - images(channels=channels)).abs().mean() < 0.1


def test_bit_depth_leaves_two_to_the_bits_levels():
    out = defence("bit_depth")(images())
    levels = torch.unique(out)
    assert len(levels) <= 8
    torch.testing.assert_close(levels * 7, torch.round(levels * 7))


def test_median_and_gaussian_match_scipy():
    x = images(n=2, channels=3, size=12)
    median = ndimage.median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    np.testing.assert_allclose(defence("median")(x).numpy(), median, atol=1e-6)
    blur = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.0, 1.0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(defence("gaussian")(x).numpy(), blur, atol=1e-5)


def test_resize_is_seeded_keeps_the_size_and_pads_with_zeros():
    x = images()
    resize = defence("resize")
    first = resize(x)
    # an image's draws depend on the seed and the image only: not on what was scored before, nor on its batch
    assert torch.equal(resize(x), first) and torch.equal(resize(x[1:]), first[1:])
    assert torch.equal(resize(x.flip(0)), first.flip(0))
    assert first.shape == x.shape
    other = defended(torch.nn.Identity(), {"name": "resize", "min_scale": 0.7, "seed": 5}).defence(x)
    assert not torch.equal(first, other)
    assert ((first == 0).flatten(1).float().mean(1) > 0).any()  # some image was shrunk and padded


@pytest.mark.parametrize("cfg,message", [
    ({"name": "blur"}, "defence: unknown name 'blur'; valid: jpeg, bit_depth, median, gaussian, resize"),
    ({"name": "jpeg", "quality": 0}, "defence jpeg: quality=0 must be in 1..100"),
    ({"name": "jpeg", "quality": 101}, "defence jpeg: quality=101 must be in 1..100"),
    ({"name": "jpeg", "qualty": 50}, "defence jpeg: unknown parameter 'qualty'; valid: quality"),
    ({"name": "median", "kernel": 4}, "defence median: kernel=4 must be odd and >= 3"),
    ({"name": "bit_depth", "bits": 2.5}, "defence bit_depth: bits=2.5 must be a int"),
    ({"name": "gaussian", "sigma": "wide"}, "defence gaussian: sigma='wide' must be a float"),
])
def test_bad_parameters_fail_with_one_line(cfg, message):
    with pytest.raises(ValueError) as err:
        defence_params(cfg)
    assert str(err.value) == message
