import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from attacks import control_noise, craft, perturbation_metrics, quantize_8bit, random_sign_noise


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


def test_control_noise_and_random_signs_are_clipped_to_unit_range():
    clean = torch.tensor([0.0, 1.0, 0.5, 0.999]).reshape(1, 1, 2, 2)
    signs = random_sign_noise(clean, 0.01, torch.Generator().manual_seed(0))
    assert 0.0 <= float(signs.min()) and float(signs.max()) <= 1.0
    control = control_noise(clean, clean + 0.01, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(control.flatten().numpy(), [0.01, 1.0, 0.51, 1.0], atol=1e-6)


def test_random_sign_noise_has_magnitude_eps_and_both_signs():
    clean = torch.full((2, 3, 16, 16), 0.5)
    delta = random_sign_noise(clean, 2 / 255, torch.Generator().manual_seed(0)) - clean
    np.testing.assert_allclose(delta.abs().numpy(), 2 / 255, atol=1e-7)
    assert 0.4 < float((delta > 0).float().mean()) < 0.6


def test_quantisation_rounds_to_the_8_bit_grid():
    values = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 100.49 / 255, 100.51 / 255, 1.0])
    np.testing.assert_allclose((quantize_8bit(values) * 255).numpy(), [0, 0, 1, 100, 101, 255], atol=1e-4)


def test_quantised_craft_is_the_rounded_attack(make_case):
    model, images, labels = make_case("multiclass")
    cfg = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 3}
    exact = craft(model, images, labels, cfg, "multiclass")
    quantised = craft(model, images, labels, {**cfg, "quantize": True}, "multiclass")
    np.testing.assert_array_equal(quantised.numpy(), np.round(exact.numpy() * 255) / 255)


def test_perturbation_metrics_match_direct_formulas():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 32, 32, generator=generator)
    adv = (clean + 0.03 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    metrics = perturbation_metrics(clean, adv)
    delta = (adv - clean).numpy().reshape(4, -1)
    assert metrics["linf"] == pytest.approx(np.abs(delta).max(axis=1).mean(), rel=1e-6)
    assert metrics["l2"] == pytest.approx(np.linalg.norm(delta, axis=1).mean(), rel=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / np.mean(delta ** 2)), rel=1e-5)
    ssim = np.mean([structural_similarity(a[0], c[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
                    for a, c in zip(adv.numpy(), clean.numpy())])
    assert metrics["ssim"] == pytest.approx(ssim, abs=1e-3)
