"""The transfer study: read each domain's data once, then train each model once, craft each adversarial
set once and evaluate every target, through a scheduler, an executor and the MLflow store, and write
the report into the study's parent run (`run_study`); what it would do (`plan_study`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from datamodules import DomainData
from datamodules.real_cache import DataCache
from datamodules.readers.source import positive_label

from medcommon.console import quiet_third_party
from .design.config import checked_config, domain_config, load_config
from .design.facts import StudyFacts
from .design.identity import study_key
from .design.locations import report_dir, study_run_name
from .execution import DeviceGroup, StudyWork, WorkSpec, executor, read_data
from .execution.evaluation import PAIR_METRICS
from .preflight import StudyPlan, require_ready, study_plan
from .preflight.externals import pin_externals
from .preflight.facts import code_version, study_facts
from .process_state import process_kept
from .report import markdown_table, with_factors, write_report
from .report.findings import AT_CHANCE_TAG
from .store.run_store import RunStore, StudyContext
from .store.runs import StudyRuns
from .store.sqlite_store import sqlite_path
from .store.tracking import artifact_root, flag, study_links
from .study_result import StudyResult, findings_frame
from medcommon.write_errors import store_writes, writing

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "norm", "attack_target", "auc_clean", "auc_adv",
                  "auc_control", "auc_pct_clean", "asr_correct", "asr_all", "targeted_success"]
TABLE_COLUMNS = ["seed", "surrogate", "target", "attack", "eps", "norm", "attack_target", *PAIR_METRICS, "run_id"]


def run_study(cfg: DictConfig | str | Path, shard: tuple[int, int] = (0, 1), *, verbose: bool = False) -> StudyResult:
    """Run a study (or shard `i/n` of it): a `StudyResult` with one table row per (seed, surrogate,
    target, attack, eps) and the pair's MLflow `run_id`, the findings, report folders, study runs
    and UI links.

    With several devices (`trainer.devices`), this process orchestrates and one follower process
    per further device joins every fit and predict (`experiments.execution.devices`).
    Work already logged with the same identity (docs/architecture.md) is read back, not redone.
    The unsharded run also writes each domain's report (tables, plots, examples, findings,
    defences) into `report_dir` and its study run. Every problem found up front (weights,
    checkpoints, data roots, tracking server, devices, disk space) is raised together before any
    work starts; external models are then probed on the data's layout. The process is left as it
    was (`process_kept`: environment, global RNGs; MLflow's tracking URI is never set), and
    Lightning's and MLflow's info-level output is off unless `verbose`.
    """
    cfg = load_config(cfg) if isinstance(cfg, (str, Path)) else checked_config(cfg)  # before anything is written
    with process_kept(), quiet_third_party(verbose):
        cache = DataCache()  # what the study reads, read once: by its checks and by its work
        require_ready(cfg, cache)
        # resolved once: MLflow's downloads unset MLFLOW_TRACKING_URI
        uri = StudyContext.of(cfg).tracking_uri
        studies = [OmegaConf.merge(study, {"tracking": {"uri": uri}})
                   for study in [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]]
        with store_writes(sqlite_path(uri), artifact_root(uri) and Path(artifact_root(uri).removeprefix("file://"))):
            return _run_studies(cfg, studies, shard, cache)


def plan_study(cfg: DictConfig | str | Path, *, verbose: bool = False) -> StudyPlan:
    """What `run_study(cfg)` would do, what is done, its cost and every problem, as `StudyPlan`
    (`text` is what `medtransfer plan` prints); writes nothing, leaves the process as it was."""
    cfg = load_config(cfg) if isinstance(cfg, (str, Path)) else checked_config(cfg)  # before anything is written
    with process_kept(), quiet_third_party(verbose):
        return study_plan(cfg)


def _run_studies(cfg: DictConfig, studies: list[DictConfig], shard: tuple[int, int],
                 cache: DataCache) -> StudyResult:
    data = [read_data(study, cache) for study in studies]  # all of it, before any store or folder is made
    code = code_version()
    facts = [study_facts(study, cache, code) for study in studies]  # the data as read
    studies = [pin_externals(*study) for study in zip(studies, data, facts)]  # probed: their identity
    with DeviceGroup(cfg) as group:  # followers for the trainer's further devices, if any
        done = [_run_domain(*study, shard, group) for study in zip(studies, data, facts)]
    uri, experiment_id = studies[0].tracking.uri, done[0].experiment_id
    runs, findings = {d.domain: d.run_id for d in done}, [d.findings for d in done if not d.findings.empty]
    return StudyResult(
        table=pd.concat([d.table for d in done], ignore_index=True) if len(done) > 1 else done[0].table,
        findings=findings_frame(pd.concat(findings, ignore_index=True) if findings else pd.DataFrame()),
        reports={d.domain: d.report for d in done if d.report is not None},
        study_runs=runs, study_run_names={d.domain: d.run_name for d in done},
        experiment_name=cfg.tracking.experiment or cfg.name, experiment_id=experiment_id, tracking_uri=uri,
        links=study_links(uri, experiment_id, runs),
        summary="\n".join(d.summary for d in done) if shard == (0, 1) else "")


class DomainDone(NamedTuple):
    """One domain's part of a `StudyResult`."""
    domain: str
    experiment_id: str
    table: pd.DataFrame
    findings: pd.DataFrame
    report: Path | None
    run_id: str
    run_name: str
    summary: str


def _run_domain(cfg: DictConfig, data: DomainData, facts: StudyFacts, shard: tuple[int, int],
                group: DeviceGroup) -> DomainDone:
    """One domain's study on its data (read already; its `facts`) in its store (`tracking.uri`, spelled
    out): the parent run, the work, the report (logged to the parent run, with the tags it returns)."""
    context = StudyContext.of(cfg)
    key = study_key(cfg, facts)
    runs = StudyRuns(RunStore.of(context), key)
    store, run_name = runs.store, study_run_name(cfg, key)

    with runs.parent(run_name) as run_id:
        work = StudyWork(WorkSpec(context.located(cfg), shard, run_id, facts), data, group, runs)
        for line in work.external_changes():
            print(line, file=sys.stderr)
        scheduler = work.scheduler
        settings = scheduler.settings
        params = {"study": cfg.name, "seeds": ",".join(map(str, scheduler.seeds)),
                  "models": ",".join(scheduler.zoo), "attacks": ",".join(sorted({s["name"] for s in settings})),
                  "eps": ",".join(sorted({str(s["eps"]) for s in settings})),
                  "pairs": cfg.pairs, "data.domain": cfg.data.domain}
        positive = positive_label(data.task, data.label_names)
        if positive:  # the class a binary study's AUCs score
            params["data.positive_label"] = positive
        store.log_params(run_id, params)
        store.set_tags(run_id, {"git_sha": facts.code, "domain": cfg.data.domain})
        store.log_dict(run_id, OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        store.log_dataset(run_id, work.test_input, "evaluation")
        doer = executor(cfg.executor, work)
        rows = doer.rows(scheduler.groups)
        queries = doer.query_rows(scheduler.queries)  # the query attacks' per-image rows (docs/protocol.md)
        table = with_factors(pd.DataFrame(rows, columns=TABLE_COLUMNS), scheduler.zoo, cfg.data.domain)
        report, summary, findings = None, "", pd.DataFrame()
        if shard == (0, 1):
            examples = None
            if scheduler.groups:  # the first group's set, crafted for its pairs (or now, when they were read back)
                work.ensure_set(scheduler.groups[0].set)
                examples = work.examples(scheduler.groups[0])
            predictions = (store.predictions(table["run_id"]) if not table.empty and cfg.bootstrap_resamples >= 1
                           else {})
            report = report_dir(cfg, key)
            with report_lock(cfg, key), writing(report, "the report"):
                budgets = sorted({int(b) for q in cfg.queries for b in q.budgets})  # where query success is told
                summary, findings, at_chance = write_report(table, report, examples, data.manifest, predictions,
                                                            cfg.bootstrap_resamples, cfg.seed, queries, budgets)
                for pair_run, at in at_chance.items():
                    store.set_tags(pair_run, {AT_CHANCE_TAG: flag(at)})
                with writing(store.artifact_folder(run_id), "the report's copy in the study run"):
                    store.log_folder(run_id, report)
    return DomainDone(cfg.data.domain, store.experiment_id, table, findings, report, run_id, run_name, summary)


def report_lock(cfg: DictConfig, key: str) -> FileLock:
    """Held while a study variant's report folder is written: two processes of one study never write it at once."""
    locks = Path(cfg.output_dir) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"report-{cfg.name}-{key}.lock"))


def format_table(table: pd.DataFrame) -> str:
    """The headline columns of a result table as Markdown."""
    return markdown_table(table[RESULT_COLUMNS]) if not table.empty else "(no results)\n"
