"""Query attacks on a target as pieces of a study's work: run (or read back) one query run per
(query setting, target, start), its per-image rows logged as `queries.csv` (docs/protocol.md,
"Query attacks"; docs/architecture.md, "MLflow contract")."""
from __future__ import annotations

import time

import pandas as pd
import torch
from torch.utils.data import Dataset

from attacks.queries import QueryModule
from lightning_modules import tasks

from ..design.identity import data_identity
from ..design.scheduler import QueryJob
from ..design.zoo import entry_params
from ..store.artifact_formats import QUERY_COLUMNS
from .devices import Process
from .predict_batches import SetBatches, TestBatches

class QueryBatches(Dataset):
    """The test batches for a query attack: `(clean, labels, start, attacked, batch_id)`, `start` the
    transfer set's images (`starts`: its `SetBatches`) or the clean ones, `attacked` the images whose
    clean decision is correct (the others are not attacked)."""

    def __init__(self, clean: TestBatches, attacked: torch.Tensor, starts: SetBatches | None = None):
        self.clean, self.attacked, self.starts = clean, attacked, starts

    def on(self, process: Process) -> "QueryBatches":
        self.clean = self.clean.on(process)
        if self.starts is not None:
            self.starts = self.starts.on(process)
        return self

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, batch_id: int):
        images, labels, _ = self.clean[batch_id]
        start = images if self.starts is None else self.starts[batch_id][0][:len(images)]
        first = batch_id * self.clean.size
        return images, labels, start, self.attacked[first:first + len(images)], batch_id


def clean_correct(task: str, labels: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per image: the target's clean decision equals the label (multilabel: every label)."""
    right = tasks.predictions(task, clean) == labels.long().reshape(tasks.predictions(task, clean).shape)
    return right.all(dim=1) if right.ndim > 1 else right


def success_at(rows: pd.DataFrame, budget: int) -> float:
    """Fooled within `budget` queries, over the clean-correct images (NaN without any)."""
    correct = rows[rows["clean_correct"]]
    return float(((correct["success"]) & (correct["queries"] <= budget)).mean()) if len(correct) else float("nan")


def query_rows(work, job: QueryJob) -> pd.DataFrame:
    """The query run's rows, under its lock: read back when a FINISHED run has its identity, else
    the target attacked and the run logged."""
    with work.store.pair_lock(job.key, "query"):
        found = work.store.finished_pair(job.key, "query")
        return work.store.store.query_rows(found.info.run_id) if found is not None else attack(work, job)


def attack(work, job: QueryJob) -> pd.DataFrame:
    """Square on every test image the target decides correctly, from the clean image or the start
    set; the query run logged with its rows and metrics."""
    started = time.perf_counter()
    target, clean = work.model(job.target), work.clean_scores(job.target)
    if work.test.task == "multilabel":
        raise ValueError(f"queries: {job.setting['name']} attacks one decision per image (binary or multiclass "
                         "tasks); this domain's task is multilabel")
    starts = None
    if job.start is not None:
        work.ensure_set(job.start)
        starts = SetBatches(work.cache.root, job.start.key, work.test_batches)
    labels = work.test.labels
    correct = clean_correct(work.test.task, labels, clean)
    counted = counter(target.module)
    before = counted()
    module = QueryModule(target.module, work.test.task, job.setting, job.target.seed, job.start is not None)
    spent, fooled = work.predictor.queries(module, QueryBatches(work.test_batches, correct, starts))
    setting = job.setting
    # the contract's count: queries to the first success; the whole budget for an image never fooled
    counted_queries = torch.where(fooled, spent, torch.where(correct, setting["max_queries"], 0))
    rows = pd.DataFrame({"target": job.target.name, "start": job.start_name, "attack": setting["name"],
                         "norm": setting["norm"], "eps": setting["eps"], "max_queries": setting["max_queries"],
                         "image": range(len(labels)), "label": labels.long().reshape(len(labels), -1)[:, 0].numpy(),
                         "clean_correct": correct.numpy(), "queries": counted_queries.long().numpy(),
                         "success": fooled.numpy()}, columns=QUERY_COLUMNS)
    sent = counted() - before if before is not None else int(spent.sum())
    metrics = {**{f"success_at_{b}": success_at(rows, b) for b in setting["budgets"]}, "queries": sent,
               "query_seconds": time.perf_counter() - started}
    entry = work.scheduler.zoo[job.target.name]
    params = {**{f"query.{k}": v for k, v in setting.items() if k != "starts"}, "start": job.start_name,
              **{f"target.{k}": v for k, v in entry_params(entry).items()},
              **{f"data.{k}": v for k, v in data_identity(work.cfg, work.spec.facts).items()}, "seed": job.target.seed}
    params["query.budgets"] = ",".join(map(str, setting["budgets"]))
    tags = {"domain": work.cfg.data.domain, "target": job.target.name, "start": job.start_name,
            "start_set": job.start.key if job.start else "clean", "git_sha": work.spec.facts.code,
            **work.scheduler.kinds[job.target.name].pair_tags(job.target.key)}
    work.store.log_query(f"{setting['name']} {setting['norm']} eps={setting['eps']:g} {job.start_name}->"
                         f"{job.target.name}", job.key, params, tags, metrics, rows)
    return rows


def counter(module):
    """The target's query count so far: an endpoint's `queries` (images it scored, now or in an
    earlier attempt, from its score cache); None for a model run here (its count is the rows')."""
    endpoint = getattr(module, "endpoint", None)
    return (lambda: endpoint.queries) if endpoint is not None else (lambda: None)
