import pytest
import torch

from attacks import craft


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_ifgsm_equals_the_papers_definition(task, make_case, task_loss, paper_ifgsm):
    model, images, labels = make_case(task)
    cfg = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 7}
    expected = paper_ifgsm(lambda x: task_loss(task, model(x), labels), images, cfg["eps"], cfg["alpha"],
                           cfg["steps"])
    crafted = craft(model, images, labels, cfg, task)
    torch.testing.assert_close(crafted, expected, atol=1e-6, rtol=0)
    assert (crafted - images).abs().max() > 3.9 / 255  # the attack reached the eps-ball's edge


@pytest.mark.parametrize("name, params, channels", [
    ("difgsm", {"diversity_prob": 0.0}, 3),
    ("tifgsm", {"diversity_prob": 0.0, "len_kernel": 1}, 1),
])
def test_layout_adapters_are_exact(name, params, channels, make_case, task_loss, paper_ifgsm):
    """Without input diversity and with a 1x1 kernel, DI/TI-FGSM reduce to iterative FGSM: on
    non-square (and 1-channel) images, the padded, channel-copied presentation changes nothing."""
    model, images, labels = make_case("binary", channels, 20, 28, fixed_size=True)
    cfg = {"eps": 4 / 255, "alpha": 1 / 255, "steps": 5}
    expected = paper_ifgsm(lambda x: task_loss("binary", model(x), labels), images, **cfg)
    crafted = craft(model, images, labels, {"name": name, **cfg, **params}, "binary")
    torch.testing.assert_close(crafted, expected, atol=1e-6, rtol=0)
