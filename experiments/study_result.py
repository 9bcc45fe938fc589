"""What `run_study` returns: the result table, the findings, where the reports and runs are."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

# `StudyResult.findings`: one row per finding and domain; `lo`, `hi`: its 95 % paired bootstrap interval
FINDING_COLUMNS = ["domain", "finding", "claim", "effect", "lo", "hi", "verdict"]


@dataclass(frozen=True, eq=False)
class StudyResult:
    """A finished study (or shard of one).

    - `table`: one row per (seed, surrogate, target, attack, eps) with the metrics, the pair's factors
      and `run_id`, the pair's MLflow run (README, "Usage").
    - `findings`: the paper's findings the study's pairs test, one row per (domain, finding):
      `FINDING_COLUMNS` (`effect` in points of AUC % of clean, paper's direction positive; `lo`, `hi`
      its 95 % interval; `verdict`); no rows for a shard or when no finding's pairs were run.
    - `reports`: domain -> its report folder (none for a shard, which writes no report).
    - `study_runs`: domain -> the MLflow run id of its study run (named `study_run_names[domain]`).
    - `experiment_name`, `experiment_id`: the MLflow experiment, `tracking_uri`: the store.
    - `links`: MLflow UI links: `runs` (the experiment's runs table) and each domain's study run.
    - `summary`: the terminal summary (tables and one line per finding) the CLI prints; "" for a shard.
    """

    table: pd.DataFrame
    findings: pd.DataFrame
    reports: dict[str, Path]
    study_runs: dict[str, str]
    study_run_names: dict[str, str]
    experiment_name: str
    experiment_id: str
    tracking_uri: str
    links: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def findings_frame(effects: pd.DataFrame) -> pd.DataFrame:
    """`StudyResult.findings` from `report.findings.finding_effects`' table (empty: no rows)."""
    if effects.empty:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    return effects[FINDING_COLUMNS].reset_index(drop=True)
