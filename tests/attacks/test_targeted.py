"""Targeted attacks and L2 budgets against torchattacks used directly: the crafted images, the targets,
the targeted success rate and the L2 distortion medtransfer reports, each computed here independently."""
import contextlib
import io

import pytest
import pytorch_lightning as pl
import torch
import torchattacks

from attacks import BatchGather, CraftingModule, craft
from attacks.cache import AdversarialSetCache
from attacks.targets import choose_targets
from experiments.execution.evaluation import TestSet, evaluate_pair, set_distortion

from torch import nn


def linear_net(outputs: int) -> nn.Module:
    """A linear classifier of 3 x 8 x 8 images, steep enough for small budgets to move its decisions."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, outputs))
    with torch.no_grad():
        model[1].weight.mul_(4.0)
    return model.eval()


def case(outputs: int, n: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    surrogate, target = linear_net(outputs), linear_net(outputs)
    images = torch.rand(n, 3, 8, 8, generator=generator)
    return surrogate, target, images, generator


def targeted_pgdl2(model, images, aimed, eps, alpha, steps):
    attack = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
    with contextlib.redirect_stdout(io.StringIO()):
        attack.set_mode_targeted_by_function(lambda _, labels: labels)
    return attack(images, aimed)


def test_least_likely_l2_ifgsm_matches_torchattacks_and_its_success_and_l2_are_counted_right():
    surrogate, target, images, generator = case(outputs=4)
    labels = torch.randint(0, 4, (len(images),), generator=generator)
    eps, alpha, steps = 1.5, 0.3, 8
    with torch.no_grad():
        logits = surrogate(images)
    least = logits.clone()
    least[torch.arange(len(images)), labels] = float("inf")  # the true class is never the target
    expected_targets = least.argmin(dim=1)
    expected = targeted_pgdl2(surrogate, images, expected_targets, eps, alpha, steps)
    setting = {"name": "ifgsm", "eps": eps, "alpha": alpha, "steps": steps, "norm": "l2", "target": "least_likely"}
    adversarial = craft(surrogate, images, labels, setting, "multiclass")
    assert torch.allclose(adversarial, expected, atol=1e-6)
    per_image = torch.linalg.vector_norm((adversarial - images).flatten(1), dim=1)
    assert (per_image <= eps + 1e-5).all() and per_image.max() > 1.0 / 255  # an L2 ball, not an L-inf one
    distortion = set_distortion([images], [(adversarial, adversarial)])
    assert distortion["l2"] == pytest.approx(float(per_image.mean()), rel=1e-6)
    assert distortion["linf"] == pytest.approx(float((adversarial - images).abs().flatten(1).amax(1).mean()), rel=1e-6)

    targets = choose_targets("least_likely", "multiclass", labels, logits)
    assert torch.equal(targets, expected_targets)
    with torch.no_grad():
        clean, adv = target(images).softmax(1), target(adversarial).softmax(1)
    hits = [int(adv[i].argmax()) == int(expected_targets[i]) for i in range(len(images))]
    scores = evaluate_pair(TestSet(None, labels, "multiclass", list("abcd"), list(range(len(images)))),
                           clean, adv, adv, targets=targets)
    assert scores.metrics["targeted_success"] == pytest.approx(sum(hits) / len(hits))
    white = evaluate_pair(TestSet(None, labels, "multiclass", list("abcd"), list(range(len(images)))),
                          clean, *(surrogate(adversarial).softmax(1).detach(),) * 2, targets=targets)
    assert white.metrics["targeted_success"] > 0.5  # the surrogate itself is mostly fooled into the target


def test_a_named_binary_class_leaves_out_the_images_already_in_it():
    surrogate, target, images, generator = case(outputs=1, n=16)
    labels = torch.randint(0, 2, (len(images),), generator=generator)
    targets = choose_targets("1", "binary", labels, torch.zeros(len(images), 1))
    assert torch.equal(targets, torch.where(labels == 1, -1, 1))
    assert torch.equal(choose_targets("least_likely", "binary", labels, torch.zeros(len(images), 1)), 1 - labels)
    assert torch.equal(choose_targets("tumour", "binary", labels, torch.zeros(len(images), 1), None, ["tumour"]),
                       targets)
    setting = {"name": "fgsm", "eps": 0.1, "target": "1"}
    adversarial = craft(surrogate, images, labels, setting, "binary", targets=targets)
    with torch.no_grad():
        adv = torch.sigmoid(target(adversarial)[:, 0])
        clean = torch.sigmoid(target(images)[:, 0])
    negatives = labels == 0
    expected = float(((adv >= 0.5) & negatives).sum()) / float(negatives.sum())
    test = TestSet(None, labels, "binary", ["tumour"], list(range(len(images))))
    assert evaluate_pair(test, clean, adv, adv, targets=targets).metrics["targeted_success"] == pytest.approx(expected)


def test_multilabel_targets_switch_one_finding_and_success_reads_that_finding():
    surrogate, target, images, generator = case(outputs=3, n=10)
    labels = torch.randint(0, 2, (len(images), 3), generator=generator)
    with torch.no_grad():
        logits = surrogate(images)
    probability_of_flip = torch.where(labels == 1, 1 - torch.sigmoid(logits), torch.sigmoid(logits))
    targets = choose_targets("least_likely", "multilabel", labels, logits)
    assert torch.equal(targets, probability_of_flip.argmin(dim=1))
    adversarial = craft(surrogate, images, labels, {"name": "ifgsm", "eps": 0.2, "alpha": 0.05, "steps": 5,
                                                    "target": "least_likely"}, "multilabel", targets=targets)
    with torch.no_grad():
        adv, clean = torch.sigmoid(target(adversarial)), torch.sigmoid(target(images))
    rows = torch.arange(len(images))
    expected = float(((adv[rows, targets] >= 0.5).long() == 1 - labels[rows, targets]).double().mean())
    test = TestSet(None, labels, "multilabel", ["x", "y", "z"], list(range(len(images))))
    assert evaluate_pair(test, clean, adv, adv, targets=targets).metrics["targeted_success"] == pytest.approx(expected)


def test_stored_targets_are_the_crafted_ones_whatever_the_crafting_batch(tmp_path):
    surrogate, _, images, generator = case(outputs=4, n=10)
    labels = torch.randint(0, 4, (len(images),), generator=generator)
    setting = {"name": "ifgsm", "eps": 0.03, "alpha": 0.01, "steps": 2, "target": "random"}
    batches = [(images[i:i + 5], labels[i:i + 5], i // 5) for i in range(0, 10, 5)]
    found = {}
    for size in (0, 2):
        got = []
        pl.Trainer(accelerator="cpu", devices=1, callbacks=[BatchGather(lambda *item: got.append(item))],
                   logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   inference_mode=False).predict(CraftingModule(surrogate, setting, "multiclass", seed=3,
                                                                batch_size=size),
                                                 torch.utils.data.DataLoader(batches, batch_size=None),
                                                 return_predictions=False)
        cache = AdversarialSetCache(tmp_path / str(size))
        cache.ensure("k", 3, lambda write: [write(clean, adv, targets) for _, clean, adv, targets in got])
        found[size] = (cache.targets("k", [b[0] for b in batches]), torch.cat([item[2] for item in got]))
    assert torch.equal(found[0][0], found[2][0]) and torch.equal(found[0][1], found[2][1])
    targets = found[0][0]
    assert ((targets >= 0) & (targets < 4) & (targets != labels)).all()
    # a target the attack aimed at: each batch's images crafted alone towards the stored targets agree
    direct = craft(surrogate, images[:5], labels[:5], setting, "multiclass", targets=targets[:5])
    assert torch.allclose(direct, found[0][1][:5], atol=1e-6)
