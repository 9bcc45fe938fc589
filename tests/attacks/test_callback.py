"""The crafting callback inside `trainer.predict`: each numbered batch attacked with its own seed and
handed on once, in batch order (the two-process case: tests/experiments/test_devices.py)."""
import pytest
import pytorch_lightning as pl
import torch

from attacks import BatchGather, CraftingCallback, batch_seed, control_noise, craft

PGD = {"name": "pgd", "eps": 4 / 255, "alpha": 1 / 255, "steps": 3}  # random start: seeded per batch


class Classifier(pl.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])


def numbered(images, labels, size):
    return [(images[i:i + size], labels[i:i + size], i // size) for i in range(0, len(images), size)]


def predict(module, batches, callback):
    pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, inference_mode=False).predict(
        module, torch.utils.data.DataLoader(batches, batch_size=None), return_predictions=False)


def by_hand(model, batches, seed):
    """Each batch attacked alone after seeding the global RNG with its batch seed, its control noise
    drawn from a generator with the same seed."""
    expected = []
    for images, labels, batch_id in batches:
        torch.manual_seed(batch_seed(seed, batch_id))
        adversarial = craft(model, images, labels, PGD, "multiclass")
        generator = torch.Generator().manual_seed(batch_seed(seed, batch_id))
        expected.append((batch_id, adversarial, control_noise(images, adversarial, generator)))
    return expected


def test_callback_crafts_each_batch_with_its_own_seed_in_order(make_case):
    model, images, labels = make_case("multiclass", n=10)
    batches = numbered(images, labels, 4)
    got = []
    callback = CraftingCallback(PGD, "multiclass", seed=5, sink=lambda *item: got.append(item))
    torch.manual_seed(123)  # the global RNG state before predicting does not matter
    predict(Classifier(model), batches, callback)
    expected = by_hand(model, batches, 5)
    assert [item[0] for item in got] == [0, 1, 2] and [len(item[1]) for item in got] == [4, 4, 2]
    for (batch_id, adversarial, control), (want_id, want_adv, want_control) in zip(got, expected, strict=True):
        assert batch_id == want_id
        assert torch.equal(adversarial, want_adv) and torch.equal(control, want_control)
    assert not torch.equal(got[0][1], by_hand(model, batches, 6)[0][1])  # another seed, another start


def test_callback_attacks_a_given_surrogate_and_gather_hands_on_predict_outputs(make_case):
    target, images, labels = make_case("multiclass", n=6, seed=0)
    surrogate, _, _ = make_case("multiclass", seed=1)
    batches = numbered(images, labels, 4)
    crafted, scored = [], []
    predict(Classifier(target), batches, CraftingCallback(PGD, "multiclass", seed=0, surrogate=surrogate,
                                                          sink=lambda *item: crafted.append(item)))
    assert torch.equal(torch.cat([adv for _, adv, _ in crafted]),
                       torch.cat([adv for _, adv, _ in by_hand(surrogate, batches, 0)]))
    predict(Classifier(target), batches, BatchGather(lambda batch_id, logits: scored.append(logits)))
    with torch.no_grad():
        assert torch.allclose(torch.cat(scored), target(images), atol=1e-6)


def test_an_unknown_attack_fails_when_the_callback_is_made():
    with pytest.raises(ValueError, match="attack: unknown name .nope."):
        CraftingCallback({"name": "nope", "eps": 0.1}, "binary")
