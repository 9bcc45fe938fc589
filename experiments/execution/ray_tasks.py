"""The Ray executor: a study's work on a pool of Ray actors, each holding the study's `StudyWork`
in its own worker process.

The driver (this process) reads back the pairs the store holds, then hands each piece of work to an
idle actor as soon as what it needs is done: a model's training (or read-back) first, a set's
crafting once its surrogate is trained, a pair's evaluation once its set is crafted and its target
trained. Each actor builds the work (scheduler, store with the driver's parent run, set cache, data,
test set) once, from the driver's `WorkSpec`, and keeps its trained models and clean scores, so a
piece of work is exactly the local executor's.

Faults: an actor whose process dies is restarted and its piece of work retried (`RETRIES`); the
retry deletes the dead attempt's unfinished run (`train_model` for models, `StudyWork.evaluate` for
pairs) or reads back the run it had finished, so each piece of work keeps exactly one FINISHED run.
A Ctrl-C (or any error) cancels the study's work: Ray flags the running pieces, which stop at their
next batch (`devices.Process.callbacks`) and end their runs KILLED.
"""
from __future__ import annotations

import signal
from collections import deque

import pandas as pd
import ray
import torch

from medcommon.console import stage_bar
from ..design.scheduler import ModelJob, PairJob, QueryJob, SetGroup, SetJob
from .devices import DeviceGroup
from .queries import QUERY_COLUMNS, query_rows
from .ray_cluster import connect
from .work import StudyWork, WorkSpec, group_rows, read_data

RETRIES = 3  # attempts after an actor's process dies mid-work
CANCEL_GRACE_S = 30  # how long cancelled work gets to end its runs KILLED


def cancelled() -> bool:
    """Whether Ray was asked to cancel the piece of work this actor is doing."""
    return ray.get_runtime_context().is_canceled()


@ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)
class StudyWorker:
    """One worker process of the pool: the study's work, built once (torch set to the actor's CPUs)."""

    def __init__(self, spec: WorkSpec):
        # a worker started from a shell that ignores SIGINT would not stop on a KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(max(1, int(spec.cfg.ray.cpus_per_task)))
        self.work = StudyWork(spec, read_data(spec.cfg), DeviceGroup(spec.cfg, stop=cancelled))

    def train(self, job: ModelJob) -> str:
        """Train (or read back) a model; its run id."""
        return self.work.model(job).run_id

    def make_set(self, job: SetJob) -> dict:
        """Craft a set (unless it is cached); the numbers its pairs share."""
        return self.work.set_numbers(job)

    def evaluate(self, pair: PairJob, shared: dict) -> dict:
        """Evaluate and log a pair (or read back the run an earlier attempt finished); its row's numbers."""
        return self.work.evaluate(pair, shared)

    def query(self, job: QueryJob) -> pd.DataFrame:
        """Run and log a query attack (or read back the run an earlier attempt finished); its rows."""
        return query_rows(self.work, job)


class RayExecutor:
    """Does a `StudyWork`'s groups on Ray actors (`rows`: their result rows, in order); Ray is started
    or joined for the call unless this process already has a session."""

    def __init__(self, work: StudyWork):
        self.work = work

    def rows(self, groups: list[SetGroup]) -> list[dict]:
        started = connect(self.work.cfg.ray)
        try:
            return self._rows(groups)
        finally:
            if started:
                ray.shutdown()

    def query_rows(self, queries: list[QueryJob]) -> pd.DataFrame:
        """The query runs' rows, each run a piece of work after its target's training and its start set."""
        frames = []
        if queries:
            started = connect(self.work.cfg.ray)
            try:
                done = Pool(self.work, [], queries).run_all()
            finally:
                if started:
                    ray.shutdown()
            frames = [done["query", job] for job in queries]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=QUERY_COLUMNS)

    def _rows(self, groups: list[SetGroup]) -> list[dict]:
        rows, todo = {}, []
        for group in groups:
            stored, pending = self.work.stored(group)
            rows.update(stored)
            if pending:
                todo.append(SetGroup(group.set, pending))
        if todo:
            rows.update(Pool(self.work, todo).run())
        return [row for group in groups for row in group_rows(group, rows)]


class Pool:
    """The pieces of work of `groups` (and of query attacks, `queries`) handed to idle actors in
    dependency order."""

    def __init__(self, work: StudyWork, groups: list[SetGroup], queries: list[QueryJob] = ()):
        self.work, self.groups, self.queries = work, groups, list(queries)
        needed = [job for group in groups for job in (group.set.surrogate, *(p.target for p in group.pairs))]
        needed += [job for query in self.queries for job in query.models]
        self.models = list(dict.fromkeys(needed))
        starts = {q.start.key: q.start for q in self.queries if q.start is not None}
        self.start_sets = [job for key, job in starts.items() if all(g.set.key != key for g in groups)]
        self.ready = deque(("train", job) for job in self.models)
        self.queued = set(self.ready)  # every piece of work handed out so far
        self.done: dict = {}  # ("train", job) -> run id, ("set", set) -> shared numbers, ("evaluate", pair) -> row
        self.running: dict[ray.ObjectRef, tuple] = {}

    def run(self) -> dict[str, dict]:
        self.run_all()
        return {pair.key: self.done["evaluate", pair] for group in self.groups for pair in group.pairs}

    def run_all(self) -> dict:
        """Every piece of work done: ("evaluate", pair) -> its row's numbers, ("query", job) -> its rows, ..."""
        cfg = self.work.cfg
        resources = ray.cluster_resources()
        slots = int(resources.get("CPU", 1) // cfg.ray.cpus_per_task)
        if cfg.ray.gpus_per_task:
            slots = min(slots, int(resources.get("GPU", 0) // cfg.ray.gpus_per_task))
        spec = ray.put(self.work.spec)
        pairs = sum(len(group.pairs) for group in self.groups)
        actors = [StudyWorker.options(num_cpus=cfg.ray.cpus_per_task, num_gpus=cfg.ray.gpus_per_task).remote(spec)
                  for _ in range(max(1, min(slots, len(self.models) + pairs + len(self.queries))))]
        idle = deque(actors)
        try:
            with stage_bar([], "evaluating", total=pairs, unit="pair") as bar:
                while self.ready or self.running:
                    while self.ready and idle:
                        self._submit(idle.popleft(), *self.ready.popleft())
                    done, _ = ray.wait(list(self.running), num_returns=1, timeout=0.2)  # short: Ctrl-C seen at once
                    for ref in done:
                        actor, piece = self.running.pop(ref)
                        self.done[piece] = ray.get(ref)
                        idle.append(actor)
                        if piece[0] == "evaluate":
                            bar.update()
                        self._unlock()
        except BaseException:
            self._cancel(actors)
            raise
        return self.done

    def _submit(self, actor, kind: str, job) -> None:
        if kind == "train":
            ref = actor.train.remote(job)
        elif kind == "set":
            ref = actor.make_set.remote(job)
        elif kind == "query":
            ref = actor.query.remote(job)
        else:
            ref = actor.evaluate.remote(job, self.done["set", job.set])
        self.running[ref] = (actor, (kind, job))

    def _unlock(self) -> None:
        """Queue each piece of work whose needs are all done: a set once its surrogate is trained, a
        pair once its set is crafted and its target trained, a query attack once its target is trained
        and its start set crafted."""
        wanted = [("set", job) for job in self.start_sets if ("train", job.surrogate) in self.done]
        wanted += [("query", q) for q in self.queries if ("train", q.target) in self.done
                   and (q.start is None or ("set", q.start) in self.done)]
        for group in self.groups:
            wanted += [("set", group.set)] if ("train", group.set.surrogate) in self.done else []
            if ("set", group.set) in self.done:
                wanted += [("evaluate", pair) for pair in group.pairs if ("train", pair.target) in self.done]
        for piece in wanted:
            if piece not in self.queued:
                self.queued.add(piece)
                self.ready.append(piece)

    def _cancel(self, actors: list) -> None:
        """Cancel the running work (it ends its runs KILLED), give it time, then end the actors."""
        refs = list(self.running)
        for ref in refs:
            ray.cancel(ref)
        ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)
