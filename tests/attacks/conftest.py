import pytest
import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = {"binary": 1, "multiclass": 3, "multilabel": 4}


class TinyNet(nn.Module):
    """conv -> tanh -> global mean -> linear; with `size`, refuses any other input size."""

    def __init__(self, channels: int, outputs: int, size: tuple[int, int] | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, 6, 3, padding=1)
        self.head = nn.Linear(6, outputs)
        self.size = size

    def forward(self, x):
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            raise AssertionError(f"model got {tuple(x.shape[-2:])}, expects {self.size}")
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def task_labels(task: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if task == "multilabel":
        return torch.randint(0, 2, (n, OUTPUTS[task]), generator=generator)
    return torch.randint(0, max(2, OUTPUTS[task]), (n,), generator=generator)


def direct_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's true-label cross-entropy, written directly (not through attacks.adapter)."""
    if task == "binary":
        return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels)


def hand_ifgsm(loss_fn, images, eps, alpha, steps):
    """The paper's iterative FGSM written out: x_0 = x (no random start),
    x_{t+1} = clip_[0,1](proj_eps-ball(x_t + alpha * sign(grad loss_fn(x_t))))."""
    x = images.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        grad, = torch.autograd.grad(loss_fn(x), x)
        x = x.detach() + alpha * grad.sign()
        x = torch.min(torch.max(x, images - eps), images + eps).clamp(0.0, 1.0)
    return x


def random_signs(clean: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """A baseline of an attack's size: `clean` plus eps times a random sign per element, clipped to [0, 1]."""
    signs = torch.randint(0, 2, clean.shape, generator=generator) * 2.0 - 1.0
    return (clean + eps * signs).clamp(0.0, 1.0)


@pytest.fixture
def sign_noise():
    return random_signs


@pytest.fixture
def task_loss():
    return direct_loss


@pytest.fixture
def paper_ifgsm():
    return hand_ifgsm


@pytest.fixture
def tiny_net():
    return TinyNet


@pytest.fixture
def make_case():
    """(model, images, labels) for a task: a random TinyNet and random images in [0, 1]."""

    def make(task: str, channels: int = 3, height: int = 16, width: int = 16, n: int = 6, seed: int = 0,
             fixed_size: bool = False):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = TinyNet(channels, OUTPUTS[task], (height, width) if fixed_size else None).eval()
        images = torch.rand(n, channels, height, width, generator=generator)
        return model, images, task_labels(task, n, generator)

    return make
