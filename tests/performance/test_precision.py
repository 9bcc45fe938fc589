"""bf16 autocast and channels-last crafting stay within tolerance of fp32.

Iterative FGSM steps by the sign of the gradient, so where a gradient component is near zero,
bf16's 8-bit mantissa (relative error ~0.4%) flips its sign: about a fifth of the pixels end up
elsewhere in the eps-ball. What matters is the attack's strength: the loss it reaches, evaluated in
fp32 by hand, must be within 2% of the fp32 attack's loss increase. Channels-last changes only the
summation order of fp32 convolutions, so almost no pixel (< 1%) may differ.
"""
import pytest
import torch
import torch.nn.functional as F

from attacks import craft
from lightning_modules.model import build_classifier

EPS = 0.03
SETTING = {"name": "ifgsm", "eps": EPS, "alpha": 0.005, "steps": 10}


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", "random", "multiclass", 4, 3).eval()
    return model, torch.rand(32, 3, 32, 32), torch.randint(0, 4, (32,))


def loss(model, images, labels) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(images), labels))


@pytest.mark.parametrize("options, max_differing, max_loss_gap", [
    ({"precision": "bf16"}, 0.30, 0.02),
    ({"channels_last": True}, 0.01, 0.001),
    ({"precision": "bf16", "channels_last": True}, 0.30, 0.02),
])
def test_fast_crafting_reaches_the_fp32_attack(problem, options, max_differing, max_loss_gap):
    model, images, labels = problem
    reference = craft(model.to(memory_format=torch.contiguous_format), images, labels, SETTING, "multiclass")
    fast = craft(model, images, labels, SETTING, "multiclass", **options)
    model.to(memory_format=torch.contiguous_format)
    assert fast.dtype == torch.float32 and fast.shape == images.shape
    assert float((fast - images).abs().max()) <= EPS + 1e-6
    assert float((fast != reference).float().mean()) <= max_differing
    clean, strong = loss(model, images, labels), loss(model, reference, labels)
    assert strong > clean + 0.5  # the attack does something worth comparing
    assert abs(loss(model, fast, labels) - strong) <= max_loss_gap * (strong - clean)


def test_unknown_precision_is_one_line_error(problem):
    model, images, labels = problem
    with pytest.raises(ValueError, match="precision='fp16' must be one of fp32, bf16"):
        craft(model, images[:2], labels[:2], SETTING, "multiclass", precision="fp16")
