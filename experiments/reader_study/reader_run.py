"""The reader study's run: one run per reader-study identity, tagged `kind=readers`, a child of the
study's parent run in the study's experiment; logged again through the run store (metrics updated,
files replaced) each time the server stops."""
from __future__ import annotations

from pathlib import Path

from ..store.run_store import PARENT_TAG, RunStore
from ..store.runs import STUDY_TAG

READERS_TAG = "readers_hash"
FILES = ("answers.csv", "by_setting.csv", "by_reader.csv", "readers.md", "detection_vs_eps.png")


def metrics_of(analysis: dict, answers: int) -> dict[str, float]:
    metrics = {"answers": float(answers), "readers": float(len(analysis["readers"]))}
    for row in analysis["settings"].itertuples():
        metrics[f"detection.{row.attack}.eps_{row.eps:g}"] = row.rate
    for row in analysis["readers"].itertuples():
        metrics[f"detection.reader.{row.reader}"] = row.rate
        if row.repeats:
            metrics[f"consistency.reader.{row.reader}"] = row.consistency
    for attack, budget in analysis["budgets"].items():
        if budget is not None:
            metrics[f"chance_budget.{attack}"] = budget
    return metrics


def log_reader_run(store: RunStore, parent_id: str, study_hash: str, readers_hash: str,
                   params: dict, folder: Path, analysis: dict, answers: int, code: str) -> str:
    """Create or update the reader study's run from the report `folder` (`code`: the code version);
    returns its id."""
    found = store.identity("readers", readers_hash, READERS_TAG)
    if found:
        run_id = found[0].info.run_id
        store.resume(run_id)
    else:
        tags = {"kind": "readers", READERS_TAG: readers_hash, STUDY_TAG: study_hash, PARENT_TAG: parent_id,
                "git_sha": code}
        run_id = store.create("reader study", tags, params, context_tags=False)
    store.log_metrics(run_id, metrics_of(analysis, answers))
    store.set_tags(run_id, {"study_run": parent_id})
    for name in FILES:
        if (folder / name).exists():
            store.log_file(run_id, folder / name)
    store.end(run_id)
    return run_id
