"""MLflow bookkeeping that makes a study resumable: one parent per study, pair runs found by hash."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import mlflow
from filelock import FileLock
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

STUDY_TAG = "study_hash"


class StudyRuns:
    """Finds or resumes the parent run of a study and the finished pair runs under it.

    A rerun of the same resolved config resumes the same parent; a pair run that was not
    FINISHED (the process died while logging it) is deleted and redone, so the store never
    holds two runs or a half-logged run for one piece of work.
    """

    def __init__(self, uri: str, experiment_id: str, study_hash: str, lock_dir: str | Path):
        self.client = MlflowClient(uri)
        self.experiment_id, self.study_hash = experiment_id, study_hash
        Path(lock_dir).mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(Path(lock_dir) / f"study-{study_hash}.lock"))
        self.parent_id: str | None = None

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

    def finished_pair(self, pair_hash: str) -> Run | None:
        """The FINISHED pair run with this hash under this study; unfinished ones are deleted."""
        finished = None
        query = f"tags.config_hash = '{pair_hash}' and tags.mlflow.parentRunId = '{self.parent_id}'"
        for run in self._search(query):
            if run.info.status == "FINISHED" and finished is None:
                finished = run
            else:
                self.client.delete_run(run.info.run_id)
        return finished
