"""Every registered attack on every task layout, 1-channel and non-square images included."""
import pytest
import torch

from attacks import ATTACKS, craft
from attacks.targets import attack_labels_of, choose_targets

FAST = {"steps": 3, "N": 2, "m": 2, "len_kernel": 5, "diversity_prob": 1.0}
EPS = 8 / 255


def cfg_for(name: str) -> dict:
    params = {k: v for k, v in FAST.items() if k in ATTACKS[name].defaults}
    if "alpha" in ATTACKS[name].defaults:
        params["alpha"] = 2 / 255
    return {"name": name, "eps": EPS, **params}



@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("task, channels, height, width", [
    ("binary", 1, 20, 28), ("multilabel", 1, 28, 20), ("multiclass", 3, 20, 28)])
def test_attack_stays_in_the_eps_ball_and_raises_the_loss(name, task, channels, height, width, make_case, sign_noise,
                                                          task_loss):
    model, images, labels = make_case(task, channels, height, width, n=4, fixed_size=True)
    adversarial = craft(model, images, labels, cfg_for(name), task)
    assert adversarial.shape == images.shape
    assert 0.0 <= float(adversarial.min()) and float(adversarial.max()) <= 1.0
    assert float((adversarial - images).abs().max()) <= EPS + 1e-6
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        clean_loss, adv_loss = (float(task_loss(task, model(x), labels)) for x in (images, adversarial))
    noise_loss = float(task_loss(task, model(sign_noise(images, EPS, generator)), labels))
    assert adv_loss > clean_loss + 2 * abs(noise_loss - clean_loss)


def test_tifgsm_refuses_other_channel_counts(make_case):
    model, images, labels = make_case("binary", channels=2)
    with pytest.raises(ValueError, match="tifgsm: needs 1- or 3-channel images, got 2"):
        craft(model, images, labels, {"name": "tifgsm"}, "binary")


@pytest.mark.parametrize("cfg, message", [
    ({"name": "cw"}, "unknown name 'cw'"),
    ({"name": "ifgsm", "eps": 0}, "eps=0.0 must be in"),
    ({"name": "ifgsm", "eps": 1.5}, "eps=1.5 must be in"),
    ({"name": "pgd", "steps": 0}, "steps=0 must be >= 1"),
    ({"name": "pgd", "steps": 2.5}, "steps=2.5 must be a int"),
    ({"name": "mifgsm", "decay": -1}, "decay=-1.0 must be >= 0"),
    ({"name": "tifgsm", "kernel_name": "box"}, "kernel_name='box' must be one of"),
    ({"name": "fgsm", "alpha": 0.1}, "unknown parameter 'alpha'"),
    ({"name": "fgsm", "quantize": "yes"}, "quantize='yes' must be a bool"),
])
def test_bad_configs_fail_with_one_line(cfg, message):
    with pytest.raises(ValueError, match=message) as error:
        craft(torch.nn.Linear(1, 1), torch.zeros(1, 1, 4, 4), torch.zeros(1), cfg, "binary")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("task, channels, height, width", [
    ("binary", 1, 20, 28), ("multilabel", 1, 28, 20), ("multiclass", 3, 20, 28)])
def test_every_attack_can_aim_at_the_least_likely_target(name, task, channels, height, width, make_case, task_loss,
                                                         sign_noise):
    """Every registered attack has torchattacks' targeted mode: it lowers the loss of the target labels
    (the flipped class, the least likely other class, one finding switched) more than noise does."""
    model, images, labels = make_case(task, channels, height, width, n=4, fixed_size=True)
    with torch.no_grad():
        targets = choose_targets("least_likely", task, labels, model(images))
    aimed = attack_labels_of(task, labels, targets)
    adversarial = craft(model, images, labels, {**cfg_for(name), "target": "least_likely"}, task, targets=targets)
    assert float((adversarial - images).abs().max()) <= EPS + 1e-6
    noise = sign_noise(images, EPS, torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean_loss, adv_loss, noise_loss = (float(task_loss(task, model(x), aimed))
                                            for x in (images, adversarial, noise))
    assert adv_loss < clean_loss - 2 * abs(noise_loss - clean_loss)


@pytest.mark.parametrize("name", sorted(n for n, spec in ATTACKS.items() if "l2" in spec.norms))
@pytest.mark.parametrize("task, channels, height, width", [
    ("binary", 1, 20, 28), ("multilabel", 1, 28, 20), ("multiclass", 3, 20, 28)])
def test_an_l2_attack_stays_in_its_l2_ball_and_raises_the_loss(name, task, channels, height, width, make_case,
                                                               task_loss):
    model, images, labels = make_case(task, channels, height, width, n=4, fixed_size=True)
    eps = 1.5  # an L2 length: above any L-inf budget, on images of 560 to 1680 values
    setting = {**cfg_for(name), "eps": eps, "norm": "l2", **({"alpha": 0.5} if name != "fgsm" else {})}
    adversarial = craft(model, images, labels, setting, task)
    lengths = torch.linalg.vector_norm((adversarial - images).flatten(1), dim=1)
    assert (lengths <= eps + 1e-4).all() and float((adversarial - images).abs().max()) > EPS
    with torch.no_grad():
        clean_loss, adv_loss = (float(task_loss(task, model(x), labels)) for x in (images, adversarial))
    assert adv_loss > clean_loss
