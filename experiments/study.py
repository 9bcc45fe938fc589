"""The transfer study: read each domain's data once, then train each model once, craft each adversarial
set once and evaluate every target, through a scheduler, an executor and the MLflow store, and write
the report into the study's parent run."""
from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from datamodules import DomainData
from datamodules.readers.source import positive_label

from .design.config import checked_config, domain_config, load_config
from .design.identity import code, study_key
from .design.locations import default_tracking_uri
from .execution import DeviceGroup, StudyWork, WorkSpec, executor, located, read_data
from .execution.evaluation import PAIR_METRICS
from .preflight import require_ready, study_plan
from .preflight.externals import pin_externals
from .report import markdown_table, with_factors, write_report
from .store.runs import StudyRuns
from .store.sqlite_store import sqlite_path
from .store.tracking import artifact_root, setup_experiment, ui_hint
from .write_errors import store_writes, writing

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "norm", "attack_target", "auc_clean", "auc_adv",
                  "auc_control", "auc_pct_clean", "asr_correct", "asr_all", "targeted_success"]
TABLE_COLUMNS = ["seed", "surrogate", "target", "attack", "eps", "norm", "attack_target", *PAIR_METRICS, "run_id"]


def run_study(cfg: DictConfig | str | Path, shard: tuple[int, int] = (0, 1), dry_run: bool = False):
    """Run a study (or shard `i/n` of it); one row per (seed, surrogate, target, attack, eps), with
    the pair's MLflow `run_id`.

    With several devices (`trainer.devices`), this process orchestrates and one follower process
    per further device joins every fit and predict (`experiments.execution.devices`).
    Work already logged with the same identity (docs/architecture.md) is read back, not redone.
    The unsharded run also writes each domain's report (tables, plots, examples, findings,
    defences) into its parent run and puts the terminal summary in `table.attrs["summary"]`. Every
    problem found up front (weights, checkpoints, data roots, tracking server, devices, disk space)
    is raised together before any work starts; external models are then probed on the data's
    layout. `dry_run=True` returns the study's plan (`experiments.preflight.plan.StudyPlan`) instead and
    writes nothing.
    """
    cfg = load_config(cfg) if isinstance(cfg, (str, Path)) else checked_config(cfg)  # before anything is written
    if dry_run:
        return study_plan(cfg)
    require_ready(cfg)
    studies = [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]
    uri = cfg.tracking.uri or default_tracking_uri()
    with store_writes(sqlite_path(uri), artifact_root(uri) and Path(artifact_root(uri).removeprefix("file://"))):
        return _run_studies(cfg, studies, shard)


def _run_studies(cfg: DictConfig, studies: list[DictConfig], shard: tuple[int, int]) -> pd.DataFrame:
    data = [read_data(study) for study in studies]  # all of it, before any store or folder is made
    studies = [pin_externals(study, domain) for study, domain in zip(studies, data)]  # probed: their identity
    with DeviceGroup(cfg) as group:  # followers for the trainer's further devices, if any
        tables = [_run_domain(study, domain, shard, group) for study, domain in zip(studies, data)]
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    table.attrs["ui"] = "\n".join(dict.fromkeys(line for t in tables for line in t.attrs["ui"].splitlines()))
    if shard == (0, 1):
        table.attrs["summary"] = "\n".join(t.attrs["summary"] for t in tables)
    return table


def _run_domain(cfg: DictConfig, data: DomainData, shard: tuple[int, int], group: DeviceGroup) -> pd.DataFrame:
    """One domain's study on its data (read already): the parent run, the work, the report."""
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    output_dir = Path(cfg.output_dir)
    store = StudyRuns(uri, experiment_id, study_key(cfg), output_dir / "locks")

    with store.parent(cfg.name):
        work = StudyWork(WorkSpec(located(cfg), shard, store.parent_id), data, group)
        for line in work.external_changes():
            print(line, file=sys.stderr)
        scheduler = work.scheduler
        settings = scheduler.settings
        mlflow.log_params({"study": cfg.name, "seeds": ",".join(map(str, scheduler.seeds)),
                           "models": ",".join(scheduler.zoo),
                           "attacks": ",".join(sorted({s["name"] for s in settings})),
                           "eps": ",".join(sorted({str(s["eps"]) for s in settings})),
                           "pairs": cfg.pairs, "data.domain": cfg.data.domain})
        positive = positive_label(data.task, data.label_names)
        if positive:  # the class a binary study's AUCs score
            mlflow.log_param("data.positive_label", positive)
        mlflow.set_tags({"git_sha": code(), "domain": cfg.data.domain})
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        mlflow.log_input(work.test_input, context="evaluation")
        doer = executor(cfg.executor, work)
        rows = doer.rows(scheduler.groups)
        queries = doer.query_rows(scheduler.queries)  # the query attacks' per-image rows (docs/protocol.md)
        table = with_factors(pd.DataFrame(rows, columns=TABLE_COLUMNS), scheduler.zoo, cfg.data.domain)
        table.attrs["ui"] = ui_hint(uri, bool(cfg.tracking.uri), experiment_id, store.parent_id, cfg.data.domain)
        if shard == (0, 1):
            examples = work.examples(scheduler.groups[0]) if scheduler.groups else None
            report = output_dir / cfg.name / "report"
            with report_lock(cfg), writing(report, "the report"):
                table.attrs["summary"] = write_report(table, report, examples, data.manifest, uri,
                                                      cfg.bootstrap_resamples, cfg.seed, queries=queries)
    return table


def report_lock(cfg: DictConfig) -> FileLock:
    """Held while a study's report folder is written: two processes of one study never write it at once."""
    locks = Path(cfg.output_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"report-{cfg.name}.lock"))


def format_table(table: pd.DataFrame) -> str:
    """The headline columns of a result table as Markdown."""
    return markdown_table(table[RESULT_COLUMNS]) if not table.empty else "(no results)\n"
