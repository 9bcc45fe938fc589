"""The study's runs: one parent run per study, one child run per pair evaluation or query attack,
found again by identity through the run store (docs/architecture.md, "MLflow contract")."""
from __future__ import annotations

import math
from contextlib import contextmanager

import pandas as pd
from mlflow.data.dataset import Dataset
from mlflow.entities import Run

from .artifact_formats import PREDICTIONS, QUERIES
from .run_store import RunStore
from .tracking import flag, numbers

STUDY_TAG = "study_hash"


def study_link(study_run_id: str) -> str:
    """The tag `study.<study run id>` (value `true`) on every pair or query run a study used, whichever
    study logged it: `tags.`study.<id>` = 'true'` finds a study's runs."""
    return f"study.{study_run_id}"


class StudyRuns:
    """Finds or resumes the parent run of a study; finds, logs and reads back pair and query runs.

    A rerun of a study with the same identity resumes the same parent. A pair run is found by its
    identity (tag `config_hash`) anywhere in the experiment, so a pair that another study already
    evaluated is read back, not redone. A pair run of this study that was not FINISHED (the process
    died while logging it) is deleted and redone, so the store never holds two runs or a half-logged
    run for one piece of work.
    """

    def __init__(self, store: RunStore, study_hash: str, parent_id: str | None = None):
        self.store, self.study_hash = store, study_hash
        self.parent_id = parent_id  # the study's parent run, once `parent` has started or resumed it

    def pair_lock(self, pair_key: str, kind: str = "pair"):
        """The lock of one pair identity (or of one `kind=query` run's), held while a process finds, or
        evaluates and logs, that work (reentrant: one lock object per identity)."""
        return self.store.lock(f"{kind}-{pair_key}")

    @contextmanager
    def parent(self, run_name: str):
        """Start or resume the study's parent run and yield its id; it ends FINISHED, a Ctrl-C ends it
        KILLED and any other error FAILED."""
        with self.store.lock(f"study-{self.study_hash}"):
            found = self.store.identity("study", self.study_hash, STUDY_TAG)
            if found:
                run_id = found[0].info.run_id
                self.store.resume(run_id, run_name)
            else:
                run_id = self.store.create(run_name, {STUDY_TAG: self.study_hash, "kind": "study"})
        self.parent_id = run_id
        with self.store.ended(run_id):
            yield run_id

    def link(self, run_id: str) -> None:
        """Record that this study uses run `run_id` (a pair or query run, maybe another study's):
        the tag `study_link(parent_id)` = `true`."""
        self.store.set_tags(run_id, {study_link(self.parent_id): flag(True)})

    def finished_pair(self, pair_key: str, kind: str = "pair") -> Run | None:
        """The FINISHED pair run (or `kind=query` run) with this identity in the experiment, linked to
        this study (`link`); this study's unfinished runs of it are deleted. Under its lock, so a run
        another process is logging is waited for, never taken for a stale one."""
        with self.pair_lock(pair_key, kind):
            finished = self.store.claim(kind, pair_key, self.parent_id)
            if finished is not None and finished.data.tags.get(study_link(self.parent_id)) != flag(True):
                self.link(finished.info.run_id)
        return finished

    def _log_child(self, kind: str, run_name: str, key: str, params: dict, tags: dict, metrics: dict,
                   frame: pd.DataFrame, name: str, test_input: Dataset | None = None) -> str:
        run_id = self.store.create_work(kind, key, run_name, {**tags, study_link(self.parent_id): flag(True)},
                                        parent_id=self.parent_id)
        with self.store.ended(run_id):
            self.store.log_params(run_id, params)
            if test_input is not None:
                self.store.log_dataset(run_id, test_input, "evaluation")
            measured = {k: v for k, v in metrics.items() if not math.isnan(float(v))}  # NaN: does not apply
            self.store.log_metrics(run_id, {**numbers(params), **measured})
            self.store.log_frame(run_id, frame, name)
        return run_id

    def log_pair(self, run_name: str, pair_key: str, params: dict, tags: dict, metrics: dict,
                 predictions: pd.DataFrame, test_input: Dataset) -> str:
        """Log one pair evaluation as a child of the study run, with its test set as a dataset input
        (context `evaluation`), each numeric param also as a metric (`numbers`) and its
        `predictions.csv`; returns its run id. A metric that does not apply (NaN: `targeted_success`
        of an untargeted set, % of clean at a clean AUC of 0) is not logged, and reads back as NaN."""
        return self._log_child("pair", run_name, pair_key, params, tags, metrics, predictions, PREDICTIONS, test_input)

    def log_query(self, run_name: str, query_key: str, params: dict, tags: dict, metrics: dict,
                  rows: pd.DataFrame) -> str:
        """Log one query attack on one target as a child of the study run (`kind=query`), its per-image
        rows as `queries.csv` and each numeric param also as a metric (`numbers`); returns its run id."""
        return self._log_child("query", run_name, query_key, params, tags, metrics, rows, QUERIES)


def study_run_id(store: RunStore, study_hash: str) -> str | None:
    """The parent run of the study with identity `study_hash`, if the store holds one."""
    found = store.search(f"tags.{STUDY_TAG} = '{study_hash}' and tags.kind = 'study'", max_results=1)
    return found[0].info.run_id if found else None
