import numpy as np
import torch

from attacks import control_noise, craft, quantize_8bit


def test_control_noise_shuffles_each_images_perturbation():
    generator = torch.Generator().manual_seed(0)
    clean = torch.full((3, 2, 8, 8), 0.5)  # mid-grey: nothing is clipped
    delta = (torch.rand(clean.shape, generator=generator) - 0.5) * 0.1
    control = control_noise(clean, clean + delta, generator)
    for image in range(3):
        shuffled = (control[image] - clean[image]).flatten().sort().values
        torch.testing.assert_close(shuffled, delta[image].flatten().sort().values, atol=1e-6, rtol=0)
    moved = (control - clean - delta).abs().flatten(1).amax(dim=1)
    assert bool((moved > 0.01).all())  # really shuffled, not returned as is


def test_control_noise_is_clipped_to_unit_range():
    clean = torch.tensor([0.0, 1.0, 0.5, 0.999]).reshape(1, 1, 2, 2)
    control = control_noise(clean, clean + 0.01, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(control.flatten().numpy(), [0.01, 1.0, 0.51, 1.0], atol=1e-6)


def test_quantisation_rounds_to_the_8_bit_grid():
    values = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 100.49 / 255, 100.51 / 255, 1.0])
    np.testing.assert_allclose((quantize_8bit(values) * 255).numpy(), [0, 0, 1, 100, 101, 255], atol=1e-4)


def test_quantised_craft_is_the_rounded_attack(make_case):
    model, images, labels = make_case("multiclass")
    cfg = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 3}
    exact = craft(model, images, labels, cfg, "multiclass")
    quantised = craft(model, images, labels, {**cfg, "quantize": True}, "multiclass")
    np.testing.assert_array_equal(quantised.numpy(), np.round(exact.numpy() * 255) / 255)
