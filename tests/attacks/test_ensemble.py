import pytest
import torch
from torch import nn

from attacks import craft, ensemble

CFG = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 6}


class MeanOfLogits(nn.Module):
    """Written independently of attacks.Ensemble: the average of two models' logits."""

    def __init__(self, first, second):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x):
        return (self.first(x) + self.second(x)) / 2


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_logit_ensemble_equals_a_mean_logit_model(task, make_case):
    first, images, labels = make_case(task, seed=0)
    second, _, _ = make_case(task, seed=1)
    expected = craft(MeanOfLogits(first, second), images, labels, CFG, task)
    crafted = craft(ensemble([first, second], "logits"), images, labels, CFG, task)
    torch.testing.assert_close(crafted, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_loss_ensemble_follows_the_mean_of_the_losses(task, make_case, task_loss, paper_ifgsm):
    first, images, labels = make_case(task, seed=0)
    second, _, _ = make_case(task, seed=1)

    def mean_loss(x):
        return (task_loss(task, first(x), labels) + task_loss(task, second(x), labels)) / 2

    expected = paper_ifgsm(mean_loss, images, CFG["eps"], CFG["alpha"], CFG["steps"])
    crafted = craft(ensemble([first, second], "loss"), images, labels, CFG, task)
    torch.testing.assert_close(crafted, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(crafted, craft(first, images, labels, CFG, task))


def test_ensemble_rejects_unknown_modes(make_case):
    with pytest.raises(ValueError, match="unknown mode 'vote'"):
        ensemble([make_case("binary")[0]], "vote")
