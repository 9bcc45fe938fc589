"""Adversarial sets as a model's predictions inside `trainer.predict`: a batch crafts the same whoever
crafts it and in whatever order, batches differ from each other, the global RNG is left alone, and
`BatchGather` hands each batch on once, in batch order (two processes: tests/experiments/test_devices.py)."""
import pytest
import pytorch_lightning as pl
import torch

from attacks import BatchGather, CraftingModule

PGD = {"name": "pgd", "eps": 4 / 255, "alpha": 1 / 255, "steps": 3}  # random start: a draw per batch


def numbered(images, labels, size):
    return [(images[i:i + size], labels[i:i + size], i // size) for i in range(0, len(images), size)]


def predict(module, batches) -> list[tuple]:
    """What `BatchGather` hands on for `batches` (in loader order), as (batch_id, *tensors)."""
    got = []
    pl.Trainer(accelerator="cpu", devices=1, callbacks=[BatchGather(lambda *item: got.append(item))], logger=False,
               enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
               inference_mode=False).predict(module, torch.utils.data.DataLoader(batches, batch_size=None),
                                             return_predictions=False)
    return got


class Scores(pl.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def predict_step(self, batch, batch_idx):
        return self.model(batch[0])


def test_a_batch_crafts_the_same_in_any_order_or_company_and_batches_differ(make_case):
    model, images, labels = make_case("multiclass", n=12)
    batches = numbered(images, labels, 4)
    together = predict(CraftingModule(model, PGD, "multiclass", seed=5), batches)
    alone = {}
    for batch in reversed(batches):  # each batch by itself, last first, as another process would
        torch.manual_seed(int(batch[2]) + 123)  # whatever the global RNG state before it
        alone[batch[2]] = CraftingModule(model, PGD, "multiclass", seed=5).predict_step(batch, 0)
    assert [item[0] for item in together] == [0, 1, 2]
    for batch_id, clean, adversarial in together:
        assert torch.equal(clean, batches[batch_id][0]) and torch.equal(adversarial, alone[batch_id][1])
    # the same images under another batch id (or another set seed) meet another random start
    first = batches[0]
    renumbered = CraftingModule(model, PGD, "multiclass", seed=5).predict_step((first[0], first[1], 7), 0)
    reseeded = CraftingModule(model, PGD, "multiclass", seed=6).predict_step(first, 0)
    assert not torch.equal(renumbered[1], together[0][2]) and not torch.equal(reseeded[1], together[0][2])
    assert not torch.equal(together[0][2] - images[:4], together[1][2] - images[4:8])


def test_crafting_leaves_the_global_rng_as_it_was(make_case):
    model, images, labels = make_case("multiclass", n=8)
    torch.manual_seed(42)
    expected = torch.rand(5)
    torch.manual_seed(42)
    module = CraftingModule(model, PGD, "multiclass", seed=1)
    for batch in numbered(images, labels, 4):
        module.predict_step(batch, 0)
    assert torch.equal(torch.rand(5), expected)


def test_each_crafted_batch_is_an_attack_within_its_budget(make_case):
    model, images, labels = make_case("multiclass", n=10)
    crafted = predict(CraftingModule(model, PGD, "multiclass", seed=0), numbered(images, labels, 4))
    assert torch.equal(torch.cat([clean for _, clean, _ in crafted]), images)
    adversarial = torch.cat([adv for _, _, adv in crafted])
    assert adversarial.shape == images.shape and 0 <= adversarial.min() and adversarial.max() <= 1
    assert (adversarial - images).abs().max() <= PGD["eps"] + 1e-6
    assert not torch.equal(adversarial, images)
    with torch.no_grad():  # the attack raises the loss of the true labels
        loss = torch.nn.functional.cross_entropy
        assert loss(model(adversarial), labels) > loss(model(images), labels)


def test_gather_hands_on_each_batch_once_in_order_and_drops_repeats(make_case):
    model, images, labels = make_case("multiclass", n=10)
    batches = numbered(images, labels, 4)
    got = predict(Scores(model), [*batches, batches[-1]])  # a process short of batches repeats its last
    assert [item[0] for item in got] == [0, 1, 2]
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([scores for _, scores in got]), model(images), atol=1e-6, rtol=0)


def test_an_unknown_attack_fails_when_the_crafting_module_is_made(make_case):
    model, _, _ = make_case("binary")
    with pytest.raises(ValueError, match="attack: unknown name .nope."):
        CraftingModule(model, {"name": "nope", "eps": 0.1}, "binary")
