"""One run store: every run medtransfer keeps (model, pair, query, study, reader-study runs) found by
its identity (tag `kind` and a key tag), claimed under its lock (stale unfinished runs removed),
created, logged, finished and read back through one MLflow client; MLflow's process-wide active run
and tracking URI are never used. `StudyContext`: where a study's runs and files go, resolved once
where the study starts."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from filelock import FileLock
from mlflow.data.dataset import Dataset
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.time import get_current_time_millis
from omegaconf import DictConfig, OmegaConf

from ..design.locations import default_tracking_uri
from .artifact_formats import PREDICTIONS, QUERIES, Predictions, read_predictions, read_query_rows
from .datasets import log_dataset
from .sqlite_store import COMPLETE, sqlite_path, store_state
from .tracking import setup_experiment, worker_name

FINISHED = RunStatus.to_string(RunStatus.FINISHED)
PARENT_TAG = "mlflow.parentRunId"
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class StudyContext:
    """Where a study's runs and files go: the tracking store, the experiment, the output folder and
    the lock folder under it. `of(cfg)` resolves the defaults once (the store's URI from
    `tracking.uri`, else `MLFLOW_TRACKING_URI`, else ./mlruns); `located(cfg)` writes it (the output
    folder resolved) into a config, so that a process started elsewhere (another folder, environment
    or machine) writes where this one does."""
    tracking_uri: str
    experiment: str
    output_dir: Path

    @classmethod
    def of(cls, cfg: DictConfig) -> StudyContext:
        return cls(cfg.tracking.uri or default_tracking_uri(), cfg.tracking.experiment or cfg.name,
                   Path(str(cfg.output_dir)))

    @property
    def lock_dir(self) -> Path:
        return self.output_dir / "locks"

    def located(self, cfg: DictConfig) -> DictConfig:
        return OmegaConf.merge(cfg, {"tracking": {"uri": self.tracking_uri, "experiment": self.experiment},
                                     "output_dir": str(self.output_dir.resolve())})


class RunStore:
    """The runs of one experiment of one tracking store (`lock_dir`: the identities' lock files).

    The lifecycle of a piece of work: under `lock(kind, key)`, `claim` gives the FINISHED run of the
    identity (read it back) or None (do the work); `create` opens its run, `log_*` fill it, `ended`
    closes it FINISHED, KILLED on a Ctrl-C, FAILED on any other error."""

    def __init__(self, uri: str, experiment_id: str, lock_dir: str | Path | None = None):
        self.uri, self.experiment_id = uri, experiment_id
        self.client = MlflowClient(uri)
        self.lock_dir = Path(lock_dir) if lock_dir is not None else None
        self.locks: dict[str, FileLock] = {}

    @classmethod
    def of(cls, context: StudyContext) -> RunStore:
        """The store of a study's context, its experiment created if needed (`setup_experiment`)."""
        return cls(context.tracking_uri, setup_experiment(context.tracking_uri, context.experiment), context.lock_dir)

    @classmethod
    def existing(cls, uri: str, experiment: str) -> RunStore | None:
        """The store of experiment `experiment` when the store and the experiment exist (a missing or
        half-built SQLite file is neither created nor repaired), else None."""
        path = sqlite_path(uri)
        if path is not None and store_state(path)[0] != COMPLETE:
            return None
        found = MlflowClient(uri).get_experiment_by_name(experiment)
        return cls(uri, found.experiment_id) if found is not None else None

    # finding and claiming
    def lock(self, name: str) -> FileLock:
        """The lock file `<lock_dir>/<name>.lock` (reentrant: one lock object per name)."""
        if name not in self.locks:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            self.locks[name] = FileLock(str(self.lock_dir / f"{name}.lock"))
        return self.locks[name]

    def search(self, query: str, max_results: int = 10000, newest_first: bool = False) -> list[Run]:
        """Runs of the experiment matching MLflow filter `query`."""
        order = ["attributes.start_time DESC"] if newest_first else None
        return self.client.search_runs([self.experiment_id], query, max_results=max_results, order_by=order)

    def identity(self, kind: str, value: str, tag: str = "config_hash") -> list[Run]:
        """The runs of one identity (tag `kind` and the key `tag`), newest first."""
        return self.search(f"tags.{tag} = '{value}' and tags.kind = '{kind}'", newest_first=True)

    def claim(self, kind: str, key: str, parent_id: str | None = None) -> Run | None:
        """Under the identity's lock (held by the caller): its newest FINISHED run, or None. Its stale
        (unfinished) runs are deleted: with `parent_id`, those of that study run, always; without, all
        of them, when none finished (the work is about to be redone)."""
        runs = self.identity(kind, key)
        finished = next((run for run in runs if run.info.status == FINISHED), None)
        if parent_id is not None or finished is None:
            for run in runs:
                if run.info.status != FINISHED and (parent_id is None or run.data.tags.get(PARENT_TAG) == parent_id):
                    self.client.delete_run(run.info.run_id)
        return finished

    def finished_keys(self, kind: str) -> set[str]:
        """The identities (`config_hash`) of the experiment's FINISHED runs of `kind`."""
        runs = self.search(f"tags.kind = '{kind}' and attributes.status = 'FINISHED'", max_results=50000)
        return {run.data.tags.get("config_hash") for run in runs}

    def get(self, run_id: str) -> Run | None:
        """Run `run_id` of this tracking store, or None when it holds none."""
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    # creating, logging, finishing
    def create(self, name: str, tags: dict, params: dict | None = None, context_tags: bool = True) -> str:
        """Open a run named `name` with `tags` (with `context_tags`: MLflow's own, user and source, added),
        and `params` (values as `str`); returns its id."""
        tags = resolve_tags(tags) if context_tags else tags
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if params:
            self.log_params(run_id, params)
        return run_id

    def create_work(self, kind: str, key: str, name: str, tags: dict, params: dict | None = None,
                    parent_id: str | None = None, context_tags: bool = True) -> str:
        """Open the run of one piece of work (tags `kind`, `config_hash`, `worker`; a child of
        `parent_id` when given)."""
        tags = {**tags, "kind": kind, "config_hash": key, **({PARENT_TAG: parent_id} if parent_id else {}),
                "worker": worker_name()}
        return self.create(name, tags, params, context_tags)

    def resume(self, run_id: str, name: str | None = None) -> None:
        """Mark a run RUNNING again (renamed to `name` when given)."""
        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING), name=name)

    def log_params(self, run_id: str, params: dict) -> None:
        self.client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        """Log metrics (name -> number) on run `run_id` at one time stamp."""
        now = get_current_time_millis()
        self.client.log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])

    def set_tags(self, run_id: str, tags: dict) -> None:
        self.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_dict(self, run_id: str, content: dict, name: str) -> None:
        self.client.log_dict(run_id, content, name)

    def log_dataset(self, run_id: str, dataset: Dataset, context: str) -> None:
        log_dataset(self.client, run_id, dataset, context)

    def log_file(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_folder(self, run_id: str, folder: str | Path) -> None:
        """Every file of `folder` as artifacts of run `run_id`."""
        self.client.log_artifacts(run_id, str(folder))

    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        """Log a DataFrame as a CSV artifact of run `run_id`."""
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_text(frame.to_csv(index=False))
            self.client.log_artifacts(run_id, tmp)

    def artifact_folder(self, run_id: str) -> str:
        """Where run `run_id` keeps its artifacts (a local path for a local store)."""
        return self.client.get_run(run_id).info.artifact_uri.removeprefix("file://")

    def end(self, run_id: str, status: str = FINISHED) -> None:
        self.client.set_terminated(run_id, status)

    @contextmanager
    def ended(self, run_id: str):
        """Run `run_id` ends FINISHED after the block, KILLED on a Ctrl-C, FAILED on any other error."""
        try:
            yield
        except KeyboardInterrupt:
            self.end(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException:
            self.end(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.end(run_id)

    # reading back
    def download(self, run_id: str, path: str, directory: str | Path) -> Path:
        """Fetch artifact `path` of run `run_id` into `directory`."""
        return Path(self.client.download_artifacts(run_id, path, str(directory)))

    def predictions(self, run_ids) -> dict[str, Predictions]:
        """`predictions.csv` of each pair run, by run id (without MLflow's per-file progress bars)."""
        out = {}
        previous = os.environ.get(PROGRESS_BAR)
        os.environ[PROGRESS_BAR] = "false"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                for run_id in dict.fromkeys(run_ids):
                    out[run_id] = read_predictions(pd.read_csv(self.download(run_id, PREDICTIONS,
                                                                             tempfile.mkdtemp(dir=tmp))))
        finally:
            if previous is None:
                os.environ.pop(PROGRESS_BAR)
            else:
                os.environ[PROGRESS_BAR] = previous
        return out

    def query_rows(self, run_id: str) -> pd.DataFrame:
        """A FINISHED query run's rows (its `queries.csv`, checked to have the contract's columns)."""
        with tempfile.TemporaryDirectory() as tmp:
            return read_query_rows(pd.read_csv(self.download(run_id, QUERIES, tmp)), run_id)
