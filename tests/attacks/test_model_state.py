"""Crafting must not change the surrogate: its mode and its batch-norm statistics stay as they were."""
import pytest
import torch

from attacks import craft
from lightning_modules import build_classifier


@pytest.mark.parametrize("name", ["fgsm", "ifgsm", "difgsm"])
@pytest.mark.parametrize("training", [False, True])
def test_craft_keeps_mode_and_batchnorm_statistics(name, training):
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "binary", 1, 3).train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.rand(8, 3, 16, 16), torch.randint(0, 2, (8,))
    first = craft(model, images, labels, {"name": name, "eps": 0.03}, "binary")
    assert model.training == training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if name != "difgsm":  # deterministic attacks give the same set when crafted again
        assert torch.equal(first, craft(model, images, labels, {"name": name, "eps": 0.03}, "binary"))
