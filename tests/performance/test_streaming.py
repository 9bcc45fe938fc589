"""Adversarial sets crafted, stored and measured chunk by chunk equal the whole-set computation."""
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from skimage.metrics import structural_similarity
from torch.utils.data import DataLoader

from attacks import (AdversarialSetCache, BatchGather, CraftingBatch, CraftingModule, batch_seed,
                     control_noise, craft)
from experiments.execution.evaluation import PerturbationTotals
from lightning_modules import ClassifierModule

SETTING = {"name": "ifgsm", "eps": 0.02, "alpha": 0.005, "steps": 3, "quantize": False}


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    module = ClassifierModule("tiny_cnn", "random", "binary", 1, 3).eval()
    return module, torch.rand(22, 3, 16, 16), torch.randint(0, 2, (22,))


def test_streamed_set_equals_the_set_crafted_in_one_piece(data, tmp_path):
    module, images, labels = data
    batches = [(images[i:i + 8], labels[i:i + 8], i // 8) for i in range(0, 22, 8)]
    cache = AdversarialSetCache(tmp_path)

    def fill(write):
        gather = BatchGather(lambda batch_id, *chunk: write(*chunk))
        pl.Trainer(accelerator="cpu", devices=1, callbacks=[gather], logger=False, enable_progress_bar=False,
                   enable_model_summary=False, inference_mode=False).predict(
            CraftingModule(module, SETTING, "binary", seed=7), DataLoader(batches, batch_size=None),
            return_predictions=False)
    cache.ensure("s", 7, fill)
    clean = [images[i:i + 8] for i in range(0, 22, 8)]
    chunks = list(cache.chunks("s", clean))
    assert [len(adv) for adv, _ in chunks] == [8, 8, 6]
    # by hand: the whole set at once, then the control noise of each batch drawn from its batch seed
    whole = craft(module.model, images, labels, SETTING, "binary")
    control = torch.cat([control_noise(images[i:i + 8], whole[i:i + 8],
                                       torch.Generator().manual_seed(batch_seed(7, i // 8)))
                         for i in range(0, 22, 8)])
    adversarial, stored_control = cache.load("s", clean)
    assert torch.allclose(adversarial, whole, atol=1e-6)
    assert torch.allclose(stored_control, control, atol=1e-6)


def test_perturbation_totals_equal_the_whole_set_metrics(data):
    _, images, _ = data
    adversarial = (images + 0.03 * torch.randn_like(images)).clamp(0, 1)
    totals = PerturbationTotals()
    for start in range(0, len(images), 5):
        totals.add(images[start:start + 5], adversarial[start:start + 5])
    whole = PerturbationTotals()
    whole.add(images, adversarial)
    streamed, whole = totals.result(), whole.result()
    assert streamed.keys() == whole.keys()
    for name, value in whole.items():
        assert streamed[name] == pytest.approx(value, rel=1e-5), name


def test_perturbation_totals_match_direct_formulas():
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 32, 32, generator=generator)
    adv = (clean + 0.03 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    totals = PerturbationTotals()
    totals.add(clean, adv)
    metrics = totals.result()
    delta = (adv - clean).numpy().reshape(4, -1)
    assert metrics["linf"] == pytest.approx(np.abs(delta).max(axis=1).mean(), rel=1e-6)
    assert metrics["l2"] == pytest.approx(np.linalg.norm(delta, axis=1).mean(), rel=1e-5)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(1 / np.mean(delta ** 2)), rel=1e-5)
    ssim = np.mean([structural_similarity(a[0], c[0], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
                    for a, c in zip(adv.numpy(), clean.numpy())])
    assert metrics["ssim"] == pytest.approx(ssim, abs=1e-3)


class FitsAtMost(torch.nn.Module):
    """Doubles its input; a batch larger than `limit` fails the way a full GPU does."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.sizes = limit, []

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"batch of {len(x)} does not fit")
        self.sizes.append(len(x))
        return 2 * x


def test_crafting_batch_halves_until_it_fits_and_keeps_that_size():
    module, x = FitsAtMost(5), torch.arange(30.0)
    batches = CraftingBatch(size=0, auto=True)
    first = batches.map(lambda i, j: module(x[i:j]), 16)
    assert batches.size == 4  # 16 and 8 fail, 4 fits
    assert torch.equal(first, 2 * x[:16])
    second = batches.map(lambda i, j: module(x[16:][i:j]), 14)
    assert torch.equal(second, 2 * x[16:])
    assert module.sizes == [4, 4, 4, 4, 4, 4, 4, 2]


def test_crafting_batch_without_auto_reports_the_failure():
    with pytest.raises(torch.OutOfMemoryError):
        CraftingBatch(size=8, auto=False).map(lambda i, j: FitsAtMost(5)(torch.zeros(j - i)), 8)
    with pytest.raises(ValueError, match="crafting.batch_size: -1 must be >= 0"):
        CraftingBatch(size=-1)
