"""The paper's white-box finding on tiny data: iterative FGSM at eps 2/255 wrecks the surrogate's
AUC, control noise of the very same perturbation hardly moves it."""
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks import control_noise, craft


def lesion_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 grey noise; positives carry a faint blob near the centre."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.5 + 0.03 * torch.randn(n, 1, 16, 16, generator=generator)
    grid = torch.arange(16.0)
    centres = torch.randint(6, 10, (n, 2), generator=generator).float()
    blob = torch.exp(-((grid[None, :, None] - centres[:, 0, None, None]) ** 2
                       + (grid[None, None, :] - centres[:, 1, None, None]) ** 2) / 6.0)
    images[:, 0] += 0.05 * blob * labels[:, None, None].float()
    return images.clamp(0.0, 1.0), labels


def trained_surrogate() -> nn.Module:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images, labels = lesion_images(128, generator)
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.Tanh(), nn.Linear(32, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(100):
        optimiser.zero_grad()
        F.binary_cross_entropy_with_logits(model(images)[:, 0], labels.float()).backward()
        optimiser.step()
    return model.eval()


def auc(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return roc_auc_score(labels.numpy(), model(images)[:, 0].numpy())


def test_whitebox_ifgsm_collapses_auc_and_control_noise_does_not(sign_noise):
    model = trained_surrogate()
    images, labels = lesion_images(96, torch.Generator().manual_seed(1))
    eps = 2 / 255
    adversarial = craft(model, images, labels, {"name": "ifgsm", "eps": eps, "alpha": eps / 4, "steps": 10},
                        "binary")
    control = control_noise(images, adversarial, torch.Generator().manual_seed(2))
    signs = sign_noise(images, eps, torch.Generator().manual_seed(3))
    clean_auc, adv_auc = auc(model, images, labels), auc(model, adversarial, labels)
    control_auc, sign_auc = auc(model, control, labels), auc(model, signs, labels)
    print(f"AUC clean {clean_auc:.3f} adv {adv_auc:.3f} control {control_auc:.3f} sign {sign_auc:.3f}")
    assert clean_auc > 0.95
    assert adv_auc < 0.1
    assert abs(control_auc - clean_auc) < 0.05
    assert abs(sign_auc - clean_auc) < 0.05
