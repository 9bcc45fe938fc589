"""Square query attacks (issue 35): per-image query counts and first successes against a counting
wrapper of the test's own around a small real model, budgets, eps-balls of transfer starts, starts
that fool at once, and reruns that query the same images."""
import pytest
import torch
from torch import nn

from attacks.queries import square_queries

EPS = {"linf": 0.02, "l2": 0.2}


class Counted(nn.Module):
    """A small linear or multiclass model that keeps every batch it was asked to score."""

    def __init__(self, outputs: int = 1):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, outputs))
        with torch.no_grad():  # zero-mean weights: the decision depends on the texture, not the brightness
            self.net[1].weight -= self.net[1].weight.mean(dim=1, keepdim=True)
            self.net[1].bias.zero_()
        self.seen: list[torch.Tensor] = []

    def forward(self, images):
        self.seen.append(images.clone())
        return self.net(images)


def decisions(model: Counted, images: torch.Tensor, task: str) -> torch.Tensor:
    with torch.no_grad():
        logits = model.net(images)
    return logits.argmax(dim=1) if task == "multiclass" else (torch.sigmoid(logits[:, 0]) >= 0.5).long()


def pieces(count: int = 8):
    """Clean images far apart (means 0.1 apart: each in its own eps-ball), textures of growing contrast."""
    torch.manual_seed(11)
    base = torch.linspace(0.1, 0.8, count).view(-1, 1, 1, 1)
    contrast = torch.linspace(0.05, 0.5, count).view(-1, 1, 1, 1)
    return (base + contrast * torch.rand(count, 3, 8, 8)).clamp(0, 1)


def owner(row: torch.Tensor, clean: torch.Tensor) -> int:
    """The clean image a queried row belongs to (the nearest one)."""
    return int((clean - row).flatten(1).norm(dim=1).argmin())


def replay(model: Counted, clean: torch.Tensor, labels: torch.Tensor, task: str):
    """Per image, independently of the attack: how many rows of it were scored and after how many
    of them the model first decided wrongly (None: never)."""
    counts, first = [0] * len(clean), [None] * len(clean)
    for batch in model.seen:
        wrong = decisions(model, batch, task) != labels[[owner(r, clean) for r in batch]]
        for row, bad in zip(batch, wrong):
            i = owner(row, clean)
            counts[i] += 1
            if bad and first[i] is None:
                first[i] = counts[i]
    return counts, first


@pytest.mark.parametrize("norm, task", [("linf", "binary"), ("l2", "binary"), ("linf", "multiclass")])
def test_counts_and_successes_match_an_independent_replay(norm, task):
    model = Counted(3 if task == "multiclass" else 1)
    clean = pieces()
    labels = decisions(model, clean, task)
    labels[0] = 1 - labels[0] if task == "binary" else (labels[0] + 1) % 3  # not clean-correct: not attacked
    attacked = decisions(model, clean, task) == labels
    result = square_queries(model, clean, labels, task, eps=EPS[norm], norm=norm, max_queries=40, seed=5,
                            attacked=attacked)
    counts, first = replay(model, clean, labels, task)
    assert result.queries.tolist() == [f if f is not None else c for c, f in zip(counts, first)]
    assert counts == result.queries.tolist()  # never queried again after its first success
    assert result.queries[0] == 0 and not result.success[0]
    assert max(counts) <= 40
    assert result.success.tolist() == [f is not None for f in first]
    fooled = decisions(model, result.adversarial, task) != labels
    assert (fooled[result.success]).all()
    distinct = [len({row.numpy().tobytes() for batch in model.seen for row in batch if owner(row, clean) == i})
                for i in range(len(clean))]
    assert distinct == counts  # no image is sent twice
    assert 0 < int(result.success.sum()) < int(attacked.sum())  # the budget decides something here


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_transfer_starts_stay_in_the_ball_and_a_fooling_start_costs_one_query(norm):
    model = Counted()
    clean = pieces()
    labels = decisions(model, clean, "binary")
    weight = model.net[1].weight.detach().view(1, 3, 8, 8)
    toward = torch.where(labels.view(-1, 1, 1, 1) == 1, -weight.sign(), weight.sign())  # lowers the margin
    if norm == "l2":
        toward = toward / toward.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    start = clean + 3 * EPS[norm] * toward  # outside the ball: the attack must project it
    start[4:] = clean[4:] - 3 * EPS[norm] * toward[4:]  # these start away from the boundary
    result = square_queries(model, clean, labels, "binary", eps=EPS[norm], norm=norm, max_queries=25, seed=2,
                            start=start)
    for batch in model.seen:
        for row in batch:
            delta = (row - clean[owner(row, clean)]).flatten()
            size = delta.abs().max() if norm == "linf" else delta.norm()
            assert size <= EPS[norm] + 1e-5 and row.min() >= 0 and row.max() <= 1
    counts, first = replay(model, clean, labels, "binary")
    by_start = [i for i in range(8) if first[i] == 1]
    assert by_start and all(result.queries[i] == 1 and counts[i] == 1 for i in by_start)
    assert result.queries.tolist() == counts and max(counts) <= 25
    assert len(model.seen[0]) == 8  # the first query scores every start image once


def test_a_rerun_queries_the_same_images_and_leaves_the_global_rng_alone():
    clean = pieces()
    runs = []
    for _ in range(2):
        model = Counted()
        labels = decisions(model, clean, "binary")
        torch.manual_seed(123)
        before = torch.get_rng_state()
        square_queries(model, clean, labels, "binary", eps=0.02, norm="linf", max_queries=15, seed=9)
        assert torch.equal(torch.get_rng_state(), before)
        runs.append(model.seen)
    assert len(runs[0]) == len(runs[1]) and all(torch.equal(a, b) for a, b in zip(*runs))
