"""The Ray executor: a scheduler's work as Ray tasks, each doing one piece of the local executor's work
in a Ray worker process.

One task per model trains it (or reads it back), one task per adversarial set crafts it after its
surrogate's task, one task per pair evaluates and logs it after its target's and set's tasks. Each
worker process builds the study's `LocalExecutor` once (its scheduler, store, cache, data and test
set) and calls its `model`, `crafted` and `evaluate`, so the work, its identities and its MLflow
runs are the local executor's. Pairs already in the store are read back by the driver, as locally.

Faults: a task whose worker dies is retried (`TASK_RETRIES`); the retry deletes the dead attempt's
unfinished run (`train_model` for models, `StudyRuns.finished_pair` for pairs) or reads back the run
it had finished, so each piece of work keeps exactly one FINISHED run. A Ctrl-C (or any error)
cancels the study's tasks; the running ones end their runs KILLED.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from omegaconf import DictConfig, OmegaConf

from ..console import stage_bar
from .local import LocalExecutor, group_rows, stored_row
from ..design.identity import study_key
from .ray_cluster import connect
from ..store.runs import StudyRuns
from ..design.scheduler import ModelJob, PairJob, Scheduler, SetJob
from ..store.tracking import setup_experiment

TASK_RETRIES = 3  # attempts after a worker process dies mid-task
CANCEL_GRACE_S = 30  # how long cancelled tasks get to end their runs KILLED


@dataclass(frozen=True)
class StudySpec:
    """What a worker needs to rebuild the driver's executor: the domain's config (locations made
    absolute), the shard and the study's parent run."""
    cfg: DictConfig
    shard: tuple[int, int]
    parent_id: str


_executors: dict[str, LocalExecutor] = {}  # this worker's executor of the latest study it worked for


def worker_executor(spec: StudySpec) -> LocalExecutor:
    """The study's executor in this worker process, built on its first task; torch set to the task's
    CPUs (Ray reuses a worker for tasks of other sizes, and torch reads OMP_NUM_THREADS only once)."""
    torch.set_num_threads(max(1, int(spec.cfg.ray.cpus_per_task)))
    key = OmegaConf.to_yaml(spec.cfg) + f"{spec.shard}{spec.parent_id}"
    if key not in _executors:
        from ..study import domain_executor, read_data

        # Ray cancels a running task through SIGINT's handler (KeyboardInterrupt, runs end KILLED); a
        # worker started from a shell that ignores SIGINT would not stop
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _executors.clear()
        cfg = spec.cfg
        store = StudyRuns(cfg.tracking.uri, setup_experiment(cfg.tracking.uri, cfg.tracking.experiment),
                          study_key(cfg), Path(cfg.output_dir) / "locks")
        store.parent_id = spec.parent_id
        _executors[key] = domain_executor(cfg, Scheduler(cfg, spec.shard), store, read_data(cfg))
    return _executors[key]


@ray.remote
def train(spec: StudySpec, job: ModelJob) -> str:
    """Train (or read back) a model; its run id."""
    return worker_executor(spec).model(job).run_id


@ray.remote
def craft(spec: StudySpec, job: SetJob, surrogate_run: str) -> dict:
    """Craft a set (after its surrogate's `train`); the numbers its pairs share."""
    return worker_executor(spec).crafted(job)


@ray.remote
def evaluate(spec: StudySpec, pair: PairJob, shared: dict, target_run: str) -> dict:
    """Evaluate and log a pair (after its set's `craft` and its target's `train`); its numbers and run
    id. A run an earlier attempt finished is read back; one it left unfinished is deleted first."""
    executor = worker_executor(spec)
    found = executor.store.finished_pair(pair.key)
    return stored_row(found) if found is not None else executor.evaluate(pair, shared)


def worker_config(cfg: DictConfig) -> DictConfig:
    """The config with the tracking store, experiment and output folder spelled out, so that a worker
    started elsewhere (another folder, environment or machine) writes where the driver does."""
    from ..store.tracking import default_tracking_uri

    return OmegaConf.merge(cfg, {"tracking": {"uri": cfg.tracking.uri or default_tracking_uri(),
                                              "experiment": cfg.tracking.experiment or cfg.name},
                                 "output_dir": str(Path(cfg.output_dir).resolve())})


def ray_rows(executor: LocalExecutor, shard: tuple[int, int]) -> list[dict]:
    """The result rows of the driver's `executor` (its scheduler's groups, in order), the work done
    by Ray tasks; Ray is started or joined here unless this process already has a session."""
    started = connect(executor.cfg.ray)
    try:
        return _run(executor, shard)
    finally:
        if started:
            ray.shutdown()


def _run(executor: LocalExecutor, shard: tuple[int, int]) -> list[dict]:
    cfg, store = executor.cfg, executor.store
    spec = ray.put(StudySpec(worker_config(cfg), shard, store.parent_id))
    options = {"num_cpus": cfg.ray.cpus_per_task, "num_gpus": cfg.ray.gpus_per_task,
               "max_retries": TASK_RETRIES}
    models: dict[ModelJob, ray.ObjectRef] = {}

    def model(job: ModelJob) -> ray.ObjectRef:
        if job not in models:
            models[job] = train.options(**options).remote(spec, job)
        return models[job]

    rows, pending, sets = {}, {}, []
    try:
        for group in executor.scheduler.groups:
            found = {pair.key: store.finished_pair(pair.key) for pair in group.pairs}
            rows.update({key: stored_row(run) for key, run in found.items() if run is not None})
            todo = [pair for pair in group.pairs if found[pair.key] is None]
            if todo:
                sets.append(craft.options(**options).remote(spec, group.set, model(group.set.surrogate)))
                for pair in todo:
                    ref = evaluate.options(**options).remote(spec, pair, sets[-1], model(pair.target))
                    pending[ref] = pair.key
        for ref in stage_bar(_completed(list(pending)), "evaluating", total=len(pending), unit="pair"):
            rows[pending[ref]] = ray.get(ref)
    except BaseException:
        _cancel([*pending, *sets, *models.values()])
        raise
    return [row for group in executor.scheduler.groups for row in group_rows(group, rows)]


def _completed(refs: list):
    """The refs as their tasks finish (waiting in short steps, so that a Ctrl-C is seen at once)."""
    while refs:
        done, refs = ray.wait(refs, num_returns=1, timeout=0.2)
        yield from done


def _cancel(refs: list) -> None:
    """Cancel the tasks (a KeyboardInterrupt in the running ones) and give them time to end their runs."""
    for ref in refs:
        ray.cancel(ref)
    ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
