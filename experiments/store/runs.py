"""The study's MLflow store: one parent run per study, one child run per pair evaluation, found again
by identity (docs/architecture.md, "MLflow contract")."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from filelock import FileLock
from mlflow.data.dataset import Dataset
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

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
        """Start or resume the study's parent run; a Ctrl-C ends it (and the open child) as KILLED."""
        with self.lock:
            found = self._search(f"tags.{STUDY_TAG} = '{self.study_hash}' and tags.kind = 'study'")
            run_id = found[0].info.run_id if found else None
            run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id,
                                   run_name=run_name, tags={STUDY_TAG: self.study_hash, "kind": "study"})
        self.parent_id = run.info.run_id
        try:
            yield run
        except KeyboardInterrupt:
            while mlflow.active_run() is not None:
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException:
            while mlflow.active_run() is not None:
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            raise
        mlflow.end_run()

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
        with mlflow.start_run(experiment_id=self.experiment_id, nested=True, tags=tags, run_name=run_name) as run:
            mlflow.log_params(params)
            mlflow.log_input(test_input, context="evaluation")
            mlflow.log_metrics({**numbers(params), **metrics})
            log_frame(predictions, "predictions.csv")
        return run.info.run_id

    def log_query(self, run_name: str, query_key: str, params: dict, tags: dict, metrics: dict,
                  rows: pd.DataFrame) -> str:
        """Log one query attack on one target as a child of the study run (`kind=query`), its per-image
        rows as `queries.csv` and each numeric param also as a metric (`numbers`); returns its run id."""
        tags = {**tags, "kind": "query", "config_hash": query_key, "mlflow.parentRunId": self.parent_id,
                "worker": worker_name(), study_link(self.parent_id): flag(True)}
        with mlflow.start_run(experiment_id=self.experiment_id, nested=True, tags=tags, run_name=run_name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({**numbers(params), **metrics})
            log_frame(rows, "queries.csv")
        return run.info.run_id
