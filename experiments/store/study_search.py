"""The store read from Python: the study runs a name or run id names, and the pair runs a study used
(`search_pairs` in `experiments.search` shapes them into `run_study`'s table)."""
from __future__ import annotations

import re

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from .run_store import RunStore
from .runs import study_link
from .tracking import flag

RUN_ID = re.compile(r"[0-9a-f]{32}")


def study_runs(uri: str, study: str) -> list[Run]:
    """The study runs `study` names in the store at `uri`: a run id, or a study's name (its newest
    study run; a study of several domains: the newest run of each `<name>-<domain>`), compared as a
    plain string with each study run's param `study` (never spliced into a filter); one line when none."""
    if not study:
        raise ValueError("search_pairs: give study=<a study run's id or a study's name>")
    if RUN_ID.fullmatch(study):
        run = RunStore(uri, "").get(study)  # None: a name that looks like a run id
        if run is not None:
            if run.data.tags.get("kind") != "study":
                raise ValueError(f"search_pairs: run {study} is not a study run (tag kind=study)")
            return [run]
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, "tags.kind = 'study'", max_results=50000,
                               order_by=["attributes.start_time DESC"])
    for named in (lambda name: name == study, lambda name: name.startswith(f"{study}-")):
        newest = {}
        for run in found:
            name = run.data.params.get("study", "")
            if named(name):
                newest.setdefault((run.info.experiment_id, name), run)
        if newest:
            return sorted(newest.values(), key=lambda run: run.data.params["study"])
    raise ValueError(f"search_pairs: no study run named {study!r} in the store")


def pair_runs(uri: str, study_run: Run) -> list[Run]:
    """The FINISHED pair runs linked to a study run (`study_link`) or logged as its children (stores
    from before the link)."""
    store, run_id = RunStore(uri, study_run.info.experiment_id), study_run.info.run_id
    found = {}
    for query in (f"tags.`{study_link(run_id)}` = '{flag(True)}'", f"tags.mlflow.parentRunId = '{run_id}'"):
        for run in store.search(f"tags.kind = 'pair' and attributes.status = 'FINISHED' and {query}",
                                max_results=50000):
            found.setdefault(run.info.run_id, run)
    return list(found.values())
