"""The study's MLflow store: one parent run per study, one child run per pair evaluation, found again
by identity (docs/architecture.md, "MLflow contract")."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock
from mlflow.data.dataset import Dataset
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.time import get_current_time_millis

from .datasets import log_dataset
from .tracking import flag, log_frame, numbers, worker_name

STUDY_TAG = "study_hash"


def study_link(study_run_id: str) -> str:
    """The tag `study.<study run id>` (value `true`) on every pair or query run a study used, whichever
    study logged it: `tags.`study.<id>` = 'true'` finds a study's runs."""
    return f"study.{study_run_id}"


class StudyRuns:
    """Finds or resumes the parent run of a study; finds, logs and reads back pair runs.

    A rerun of a study with the same identity resumes the same parent. A pair run is found by its
    identity (tag `config_hash`) anywhere in the experiment, so a pair that another study already
    evaluated is read back, not redone. A pair run of this study that was not FINISHED (the process
    died while logging it) is deleted and redone, so the store never holds two runs or a half-logged
    run for one piece of work.
    """

    def __init__(self, uri: str, experiment_id: str, study_hash: str, lock_dir: str | Path,
                 parent_id: str | None = None):
        self.client = MlflowClient(uri)
        self.experiment_id, self.study_hash = experiment_id, study_hash
        self.lock_dir = Path(lock_dir)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.lock_dir / f"study-{study_hash}.lock"))
        self.pair_locks: dict[str, FileLock] = {}
        self.parent_id = parent_id  # the study's parent run, once `parent` has started or resumed it

    def pair_lock(self, pair_key: str, kind: str = "pair") -> FileLock:
        """The lock of one pair identity (or of one `kind=query` run's), held while a process finds, or
        evaluates and logs, that work (reentrant: one lock object per identity)."""
        if pair_key not in self.pair_locks:
            self.pair_locks[pair_key] = FileLock(str(self.lock_dir / f"{kind}-{pair_key}.lock"))
        return self.pair_locks[pair_key]

    def _search(self, query: str) -> list[Run]:
        return self.client.search_runs([self.experiment_id], query, max_results=10000)

    @contextmanager
    def parent(self, run_name: str):
        """Start or resume the study's parent run (through this store's client: MLflow's process-wide
        active run is never used) and yield its id; it ends FINISHED, a Ctrl-C ends it KILLED and any
        other error FAILED."""
        with self.lock:
            found = self._search(f"tags.{STUDY_TAG} = '{self.study_hash}' and tags.kind = 'study'")
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING), name=run_name)
            else:
                run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=resolve_tags(
                    {STUDY_TAG: self.study_hash, "kind": "study"})).info.run_id
        self.parent_id = run_id
        with ended(self.client, run_id):
            yield run_id

    def link(self, run_id: str) -> None:
        """Record that this study uses run `run_id` (a pair or query run, maybe another study's):
        the tag `study_link(parent_id)` = `true`."""
        self.client.set_tag(run_id, study_link(self.parent_id), flag(True))

    def finished_pair(self, pair_key: str, kind: str = "pair") -> Run | None:
        """The FINISHED pair run (or `kind=query` run) with this identity in the experiment, linked to
        this study (`link`); this study's unfinished runs of it are deleted. Under its lock, so a run
        another process is logging is waited for, never taken for a stale one."""
        finished = None
        with self.pair_lock(pair_key, kind):
            for run in self._search(f"tags.kind = '{kind}' and tags.config_hash = '{pair_key}'"):
                if run.info.status == "FINISHED" and finished is None:
                    finished = run
                elif run.info.status != "FINISHED" and run.data.tags.get("mlflow.parentRunId") == self.parent_id:
                    self.client.delete_run(run.info.run_id)
            if finished is not None and finished.data.tags.get(study_link(self.parent_id)) != flag(True):
                self.link(finished.info.run_id)
        return finished

    def log_pair(self, run_name: str, pair_key: str, params: dict, tags: dict, metrics: dict,
                 predictions: pd.DataFrame, test_input: Dataset) -> str:
        """Log one pair evaluation as a child of the study run, with its test set as a dataset input
        (context `evaluation`) and each numeric param also as a metric (`numbers`); returns its run id."""
        tags = {**tags, "kind": "pair", "config_hash": pair_key, "mlflow.parentRunId": self.parent_id,
                "worker": worker_name(), study_link(self.parent_id): flag(True)}
        run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=resolve_tags(tags)).info.run_id
        with ended(self.client, run_id):
            self.client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
            log_dataset(self.client, run_id, test_input, "evaluation")
            self.log_numbers(run_id, {**numbers(params), **metrics})
            log_frame(self.client, run_id, predictions, "predictions.csv")
        return run_id

    def log_query(self, run_name: str, query_key: str, params: dict, tags: dict, metrics: dict,
                  rows: pd.DataFrame) -> str:
        """Log one query attack on one target as a child of the study run (`kind=query`), its per-image
        rows as `queries.csv` and each numeric param also as a metric (`numbers`); returns its run id."""
        tags = {**tags, "kind": "query", "config_hash": query_key, "mlflow.parentRunId": self.parent_id,
                "worker": worker_name(), study_link(self.parent_id): flag(True)}
        run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=resolve_tags(tags)).info.run_id
        with ended(self.client, run_id):
            self.client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
            self.log_numbers(run_id, {**numbers(params), **metrics})
            log_frame(self.client, run_id, rows, "queries.csv")
        return run_id

    def log_numbers(self, run_id: str, metrics: dict) -> None:
        """Log metrics (name -> number) on run `run_id` at one time stamp."""
        now = get_current_time_millis()
        self.client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()])


@contextmanager
def ended(client: MlflowClient, run_id: str):
    """Run `run_id` ends FINISHED after the block, KILLED on a Ctrl-C, FAILED on any other error."""
    try:
        yield
    except KeyboardInterrupt:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id)
