"""Score-only query attacks: torchattacks' Square on a target's decisions, each image's queries counted.

Square (`torchattacks.Square`, random search) needs only scores. It is run through its own
`attack_single_run`, with its `margin_and_loss` replaced by `Oracle.margins`: torchattacks passes
that method the labels of the images a query holds, and the labels handed to it are the images'
positions, so the oracle knows which image each queried row is. For each queried row it

- projects the image onto the eps-ball around its clean image (and into [0, 1]): a search started
  from a transfer set's image stays a valid adversarial of the clean one;
- scores it through the target's forward (the contract path of scoring) and decides as the study
  does (`lightning_modules.tasks.predictions`: threshold 0.5 of the positive score, arg-max);
- counts one query for that image, and records its first success (the decision no longer equals
  the label) with the image that achieved it; an image asked for before (a step of Square that
  changed nothing) is answered from memory, neither sent nor counted.

The margin given to Square is positive exactly while the study's decision is still correct (its
size: the distance of the logits from the decision boundary), so Square stops querying an image at
its first success. Its random draws come from `piece_seed` in a forked RNG state (the global RNG
is left as it was), so a rerun queries the same images in the same order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torchattacks
from torch import nn

from lightning_modules import tasks

from .crafting_batch import RNG_PIECE
from .prediction import piece_seed

NORMS = {"linf": "Linf", "l2": "L2"}
TIE = 1e-12  # added to the boundary distance of a correct decision, so that a tie still counts as correct


def project(images: torch.Tensor, clean: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """`images` moved into the `norm` ball of radius `eps` around `clean`, then into [0, 1] (which,
    with `clean` in [0, 1], only shrinks the perturbation)."""
    delta = images - clean
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        size = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / size).clamp(max=1.0).view(-1, *[1] * (delta.ndim - 1))
    return (clean + delta).clamp(0.0, 1.0)


def decision_margin(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per image (float64): positive iff the study's decision on these logits equals the label,
    its size the logits' distance from the decision boundary (multilabel: every label must be right;
    the size is the closest label's)."""
    decisions = tasks.predictions(task, tasks.scores(task, logits))
    logits = logits.double()
    if task == "multiclass":
        rows = torch.arange(len(logits), device=logits.device)
        others = logits.clone()
        others[rows, labels.long()] = -torch.inf
        distance = (logits[rows, labels.long()] - others.amax(dim=1)).abs()
        correct = decisions == labels.long()
    elif task == "binary":
        distance = logits.reshape(len(logits)).abs()
        correct = decisions == labels.long().reshape(-1)
    else:
        distance = logits.abs().amin(dim=1)
        correct = (decisions == labels.long()).all(dim=1)
    sign = correct.double() * 2 - 1
    return sign * (distance + TIE)


class Oracle(nn.Module):
    """The target's decisions on one piece of images, queried one row per image, counted per image.

    `clean`: the piece's clean images (the centres of the eps-balls), `labels` their true labels.
    `queries[i]`: the queries image i has cost; `success[i]`, `adversarial[i]`: its first success and
    the image (as the target saw it) that achieved it."""

    def __init__(self, target: nn.Module, task: str, clean: torch.Tensor, labels: torch.Tensor, eps: float,
                 norm: str):
        super().__init__()
        self.target, self.task, self.clean, self.labels = target, task, clean, labels
        self.eps, self.norm = float(eps), norm
        # torchattacks reads the device from the model's first parameter; an endpoint's module has none
        self.device_marker = nn.Parameter(torch.empty(0, device=clean.device), requires_grad=False)
        self.queries = torch.zeros(len(clean), dtype=torch.long, device=clean.device)
        self.asked: list[dict[bytes, torch.Tensor]] = [{} for _ in range(len(clean))]  # per image: digest -> margin
        self.success = torch.zeros(len(clean), dtype=torch.bool, device=clean.device)
        self.adversarial = clean.clone()

    def margins(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Query the target on `images` (image `index[j]` in row j); their decision margins. A row
        that repeats an image already asked for that image (Square's step can leave it unchanged) is
        answered from memory: not sent, not counted."""
        index = index.reshape(-1).long()
        seen = project(images.reshape(len(index), *self.clean.shape[1:]), self.clean[index], self.eps, self.norm)
        digests = [hashlib.sha256(row.cpu().numpy().tobytes()).digest() for row in seen]
        new = [j for j, (i, d) in enumerate(zip(index.tolist(), digests)) if d not in self.asked[i]]
        if new:
            rows = torch.tensor(new, device=index.device)
            with torch.no_grad():
                answers = decision_margin(self.task, self.target(seen[rows]), self.labels[index[rows]])
            for j, answer in zip(new, answers):
                self.asked[int(index[j])][digests[j]] = answer
            self.queries[index[rows]] += 1
            first = (answers <= 0) & ~self.success[index[rows]]
            self.success[index[rows][first]] = True
            self.adversarial[index[rows][first]] = seen[rows][first]
        return torch.stack([self.asked[int(i)][d] for i, d in zip(index, digests)])


class OracleSquare(torchattacks.Square):
    """torchattacks' Square whose queries go to an `Oracle` (the labels it is given are image positions)."""

    def __init__(self, oracle: Oracle, norm: str, eps: float, iterations: int, seed: int):
        super().__init__(oracle, norm=NORMS[norm], eps=float(eps), n_queries=int(iterations), n_restarts=1,
                         loss="margin", seed=int(seed))
        self.oracle = oracle

    def margin_and_loss(self, x, y):
        margin = self.oracle.margins(x, y)
        return margin, margin


@dataclass
class QueryResult:
    """Per image of a piece: target queries spent (until the first success; at most the budget, less
    when some of Square's steps repeated an image), whether it was fooled, and the image that fooled
    it (else its start)."""
    queries: torch.Tensor
    success: torch.Tensor
    adversarial: torch.Tensor


def square_queries(target: nn.Module, clean: torch.Tensor, labels: torch.Tensor, task: str, *, eps: float,
                   norm: str, max_queries: int, seed: int, start: torch.Tensor | None = None,
                   attacked: torch.Tensor | None = None) -> QueryResult:
    """Square on the `attacked` images of one piece (default: all), at most `max_queries` target
    queries each. From `start` (a transfer set's images) the start is queried first, projected onto
    the eps-ball around `clean` (an image it fools costs 1 query); Square then searches around the
    start of each image it did not fool, every query projected onto that ball. From the clean image,
    Square's first query is its own random initialisation. Images not attacked cost nothing."""
    attacked = torch.ones(len(clean), dtype=torch.bool, device=clean.device) if attacked is None else attacked
    oracle = Oracle(target, task, clean, labels, eps, norm)
    origin = clean if start is None else start
    if start is not None and attacked.any():
        oracle.margins(start[attacked], attacked.nonzero().flatten())
    left = (attacked & ~oracle.success).nonzero().flatten()
    iterations = max_queries - (start is not None) - 1  # Square's initialisation is one query
    if len(left) and iterations >= 0:
        cuda = [clean.device.index or 0] if clean.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            square = OracleSquare(oracle, norm, eps, iterations, seed)
            square.init_hyperparam(origin[left])
            torch.manual_seed(seed)
            square.attack_single_run(origin[left], left)
    adversarial = torch.where(oracle.success.view(-1, *[1] * (clean.ndim - 1)), oracle.adversarial,
                              project(origin, clean, eps, norm))
    return QueryResult(oracle.queries, oracle.success, adversarial)


class QueryModule(pl.LightningModule):
    """A query attack on `target` as predictions: `predict_step` attacks a numbered batch
    `(clean, labels, start, attacked, batch_id)` in the fixed pieces of `RNG_PIECE` images, each
    seeded by `piece_seed(seed, batch_id, first image)`, and returns each image's queries and
    success. `from_start`: `start` holds a transfer set's images (else it is the clean batch)."""

    def __init__(self, target: nn.Module, task: str, setting: dict, seed: int, from_start: bool):
        super().__init__()
        self.target, self.task, self.setting, self.seed, self.from_start = target, task, setting, int(seed), from_start

    def predict_step(self, batch, batch_idx):
        clean, labels, start, attacked, batch_id = batch
        parts = [square_queries(self.target, clean[i:i + RNG_PIECE], labels[i:i + RNG_PIECE], self.task,
                                eps=self.setting["eps"], norm=self.setting["norm"],
                                max_queries=self.setting["max_queries"], seed=piece_seed(self.seed, int(batch_id), i),
                                start=start[i:i + RNG_PIECE] if self.from_start else None,
                                attacked=attacked[i:i + RNG_PIECE])
                 for i in range(0, len(clean), RNG_PIECE)]
        return torch.cat([p.queries for p in parts]), torch.cat([p.success for p in parts])
