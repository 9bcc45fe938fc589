"""The transfer study: read each domain's data once, then train each model once, craft each adversarial
set once and evaluate every target, through a scheduler, an executor and the MLflow store."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from attacks import AdversarialSetCache
from datamodules import DomainData
from datamodules.synthetic.cache import cache_root

from .config import domain_config, load_config
from .console import stage_bar
from .datasets import split_dataset
from .defence_report import defences_section
from .evaluation import PAIR_METRICS, load_test_set
from .executor import LocalExecutor, examples_of
from .findings import findings_section
from .identity import code, study_key
from .outputs import with_factors, write_outputs
from .ranks import DeviceGroup
from .reports import markdown_table
from .runs import StudyRuns
from .scheduler import Scheduler
from .sqlite_store import sqlite_path
from .tracking import artifact_root, default_tracking_uri, setup_experiment, ui_hint
from .training import domain_data
from .write_errors import store_writes, writing

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "auc_clean", "auc_adv", "auc_control",
                  "auc_pct_clean", "asr"]
TABLE_COLUMNS = ["seed", "surrogate", "target", "attack", "eps", *PAIR_METRICS, "run_id"]


def run_study(cfg: DictConfig | str | Path, shard: tuple[int, int] = (0, 1), dry_run: bool = False):
    """Run a study (or shard `i/n` of it); one row per (seed, surrogate, target, attack, eps), with
    the pair's MLflow `run_id`.

    With several devices (`trainer.devices`), this process orchestrates and one follower process
    per further device joins every fit and predict (`experiments.ranks`).
    Work already logged with the same identity (docs/architecture.md) is read back, not redone.
    The unsharded run also writes the report (tables, plots, examples) and puts its terminal
    summary in `table.attrs["summary"]`. Every problem found up front (weights, checkpoints, data
    roots, tracking server, devices, disk space) is raised together before any work starts.
    `dry_run=True` returns the study's plan (`experiments.plan.StudyPlan`) instead and writes nothing.
    """
    if not isinstance(cfg, DictConfig):
        cfg = load_config(cfg)
    if dry_run:
        from .plan import study_plan
        return study_plan(cfg)
    from .checks import require_ready
    require_ready(cfg)
    studies = [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]
    uri = cfg.tracking.uri or default_tracking_uri()
    with store_writes(sqlite_path(uri), artifact_root(uri) and Path(artifact_root(uri).removeprefix("file://"))):
        return _run_studies(cfg, studies, shard)


def _run_studies(cfg: DictConfig, studies: list[DictConfig], shard: tuple[int, int]) -> pd.DataFrame:
    data = [read_data(study) for study in studies]  # all of it, before any store or folder is made
    with DeviceGroup(cfg):  # followers for the trainer's further devices, if any
        tables = [_run_domain(study, domain, shard) for study, domain in zip(studies, data)]
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    table.attrs["ui"] = "\n".join(dict.fromkeys(line for t in tables for line in t.attrs["ui"].splitlines()))
    if shard == (0, 1):
        uri, report = cfg.tracking.uri or default_tracking_uri(), Path(cfg.output_dir) / cfg.name / "report"
        with report_lock(cfg), writing(report, "the findings and defences tables"):
            findings = findings_section(table, uri, report, cfg.bootstrap_resamples, cfg.seed)
            defences = defences_section(table, uri, report, cfg.bootstrap_resamples, cfg.seed)
        table.attrs["summary"] = "\n".join([*(t.attrs.get("summary", "") for t in tables), findings, defences])
    return table


def read_data(cfg: DictConfig) -> DomainData:
    """A domain's data, read and checked once, with its test split and d1 checked to be non-empty
    (d1 runs out of patients first: d2 is at least as large, d1/10 and d2/2 keep at least one)."""
    with writing(cache_root(cfg.data.cache_dir) or "the data cache", f"the generated {cfg.data.domain} data"):
        data = domain_data(cfg).prepare()
    data.datamodule("d1").setup()
    return data


def _run_domain(cfg: DictConfig, data: DomainData, shard: tuple[int, int]) -> pd.DataFrame:
    """One domain's study on its data (read already): the parent run, the work, the report."""
    scheduler = Scheduler(cfg, shard)
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    output_dir = Path(cfg.output_dir)
    store = StudyRuns(uri, experiment_id, study_key(cfg), output_dir / "locks")

    with store.parent(cfg.name):
        settings = scheduler.settings
        mlflow.log_params({"study": cfg.name, "seeds": ",".join(map(str, scheduler.seeds)),
                           "models": ",".join(scheduler.zoo),
                           "attacks": ",".join(sorted({s["name"] for s in settings})),
                           "eps": ",".join(sorted({str(s["eps"]) for s in settings})),
                           "pairs": cfg.pairs, "data.domain": cfg.data.domain})
        mlflow.set_tags({"git_sha": code(), "domain": cfg.data.domain})
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        executor = domain_executor(cfg, scheduler, store, data)
        mlflow.log_input(executor.test_input, context="evaluation")
        if cfg.executor == "ray":
            from .ray_executor import ray_rows
            rows = ray_rows(executor, shard)
        else:
            with stage_bar(scheduler.groups, "evaluating", unit="set") as groups:  # own line on errors
                rows = [row for group in groups for row in executor.run_group(group)]
        table = with_factors(pd.DataFrame(rows, columns=TABLE_COLUMNS), scheduler.zoo, cfg.data.domain)
        table.attrs["ui"] = ui_hint(uri, bool(cfg.tracking.uri), experiment_id, store.parent_id, cfg.data.domain)
        if shard == (0, 1):
            examples = examples_of(executor, scheduler.groups[0], cfg.data.domain) if scheduler.groups else None
            report = output_dir / cfg.name / "report"
            with report_lock(cfg), writing(report, "the report"):
                table.attrs["summary"] = write_outputs(table, report, examples,
                                                       data.manifest)
    return table


def report_lock(cfg: DictConfig) -> FileLock:
    """Held while a study's report folder is written: two processes of one study never write it at once."""
    locks = Path(cfg.output_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"report-{cfg.name}.lock"))


def domain_executor(cfg: DictConfig, scheduler: Scheduler, store: StudyRuns, data: DomainData) -> LocalExecutor:
    """The local executor of one domain's study, with its test set read from `data`."""
    test_split = data.datamodule("d1")
    return LocalExecutor(scheduler, store, AdversarialSetCache(Path(cfg.output_dir) / "adversarial_sets"), data,
                         load_test_set(test_split), split_dataset(cfg.data, test_split, "test"))


def format_table(table: pd.DataFrame) -> str:
    """The headline columns of a result table as Markdown."""
    return markdown_table(table[RESULT_COLUMNS]) if not table.empty else "(no results)\n"
