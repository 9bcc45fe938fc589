"""The attacker's target per image (an attack setting's `target`) for every task layout.

A target is stored per image as one whole number, `NO_TARGET` (-1) where the image has none:

- binary: every targeted mode aims at the flipped class, 1 - y (`least_likely` and `random` both
  are that class); a named class `k` (0, 1, or its `data.labels` name; a one-name list names the
  positive class) is the target of every image, and images of class `k` already have none.
- multiclass: `least_likely` is the class other than the true one with the surrogate's smallest
  clean logit, `random` one of the other classes drawn uniformly per image, a named class `k` the
  target of every image (images of class `k` have none).
- multilabel: a target is one finding `j` switched to the other value (on if absent, off if
  present), the other findings kept at their true values; stored: `j`. A named finding is the
  same `j` for every image, `random` one finding drawn uniformly per image, `least_likely` the
  finding whose flipped value the surrogate finds least likely on the clean image.

A targeted attack descends the cross-entropy of the target labels (`attack_labels`); an image without
a target is pushed towards its own class (which is the named class). Success (`targeted_hits`): the
decision equals the target: the class, or for multilabel the flipped value of finding `j`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_modules.tasks import check_task, predictions

from .registry import TARGET_MODES

NO_TARGET = -1
MODES = TARGET_MODES[1:]  # the targeted modes; any other target names a class (finding)


def named_index(target, task: str, label_names: list[str] | None, outputs: int) -> int:
    """The class (finding) a `<label>` target names, by index or by name; ValueError when it names none
    of the task's `outputs` classes (findings)."""
    names = list(label_names or [])
    if task == "binary" and len(names) == 1:
        names = ["", names[0]]  # one name: the positive class
    index = int(target) if str(target).isdigit() else names.index(target) if target in names else None
    if index is None or not 0 <= index < outputs:
        valid = f"0 to {outputs - 1}" + (f" or one of {', '.join(n for n in names if n)}" if names else "")
        raise ValueError(f"target={target!r} names no {'finding' if task == 'multilabel' else 'class'}; valid: {valid}")
    return index


def choose_targets(target, task: str, labels: torch.Tensor, logits: torch.Tensor,
                   generator: torch.Generator | None = None, label_names: list[str] | None = None) -> torch.Tensor:
    """The target of each image (int64 (N,), `NO_TARGET` where none) for a targeted `target` mode:
    `logits` are the surrogate's on the clean images (used by `least_likely`), `generator` draws
    `random` targets (torch's global one when None)."""
    task = check_task(task)
    count = len(labels)
    labels = labels.long().cpu()
    logits = logits.detach().float().cpu().reshape(count, -1)
    outputs = 2 if task == "binary" else logits.shape[1]
    if target not in MODES:
        index = named_index(target, task, label_names, outputs)
        chosen = torch.full((count,), index, dtype=torch.long)
        return chosen if task == "multilabel" else torch.where(labels.reshape(-1) == index, NO_TARGET, chosen)
    if task == "binary":
        return 1 - labels.reshape(-1)
    if target == "random":
        drawn = torch.randint(0, outputs - (task == "multiclass"), (count,), generator=generator)
        return drawn + (drawn >= labels) if task == "multiclass" else drawn
    if task == "multiclass":
        return logits.scatter(1, labels.reshape(-1, 1), float("inf")).argmin(dim=1)
    flipped = 1 - labels  # multilabel: log-probability of each finding's flipped value
    return torch.where(flipped == 1, F.logsigmoid(logits), F.logsigmoid(-logits)).argmin(dim=1)


def attack_labels_of(task: str, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The labels a targeted attack aims at, in the layout of `labels`: the target class (the true one
    where there is none), or the true findings with the target finding flipped."""
    targets = targets.to(labels.device)
    if check_task(task) != "multilabel":
        flat = labels.long().reshape(-1)
        return torch.where(targets >= 0, targets, flat).reshape(labels.shape)
    aimed = labels.long().clone()
    rows = torch.arange(len(aimed), device=aimed.device)
    aimed[rows, targets] = 1 - aimed[rows, targets]
    return aimed


def targeted_hits(task: str, labels: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor):
    """Per image: whether the decision from `scores` reaches its target (float 0/1) and whether it
    has a target (float 0/1); ValueError for targets the task does not have."""
    task = check_task(task)
    targets = targets.long().reshape(-1)
    decisions = predictions(task, scores)
    outputs = 2 if task == "binary" else scores.shape[1]
    if len(targets) != len(labels) or bool(((targets < NO_TARGET) | (targets >= outputs)).any()):
        raise ValueError(f"targets: {len(targets)} values outside -1..{outputs - 1} or not one per image "
                         f"({len(labels)})")
    counted = targets >= 0
    picked = targets.clamp(min=0)
    if task == "multilabel":
        rows = torch.arange(len(targets))
        hits = decisions[rows, picked] == 1 - labels.long()[rows, picked]
    else:
        hits = decisions.reshape(-1) == picked
    return (hits & counted).double(), counted.double()
