"""The transfer study: train each model once, craft each adversarial set once, evaluate every target."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from attacks import AdversarialSetCache, attack_params, set_key

from .bootstrap import PairedBootstrap
from .config import domain_config, load_config
from .crafting import PerturbationTotals, craft_set, predict
from .metrics import attack_success_rate, auc
from .outputs import example_images, with_factors, write_outputs
from .reports import CI_COLUMNS, markdown_table
from .runs import StudyRuns
from .tracking import (code_version, config_hash, default_tracking_uri, log_frame,
                       setup_experiment)
from .training import datamodule_for, model_key, train_model
from .zoo import expand_zoo, select_pairs

RESULT_COLUMNS = ["surrogate", "target", "attack", "eps", "auc_clean", "auc_adv", "auc_control",
                  "auc_pct_clean", "asr"]
METRICS = ["auc_clean", "auc_adv", "auc_control", "auc_pct_clean", "asr", "linf", "l2", "ssim", "psnr",
           *CI_COLUMNS, "craft_seconds", "eval_seconds"]
TABLE_COLUMNS = ["seed", "surrogate", "target", "attack", "eps", *METRICS]


@dataclass
class TestSet:
    """The test split: labels and sample ids in memory, images streamed batch by batch from `loader`."""

    loader: DataLoader
    labels: torch.Tensor
    task: str
    label_names: list[str]
    sample_ids: list

    def batches(self) -> Iterator[torch.Tensor]:
        return (images for images, _ in self.loader)


@dataclass
class Unit:
    """One adversarial set to craft (surrogate x attack setting, at one seed) and the targets it meets."""

    seed: int
    surrogate: str
    setting: dict
    targets: list[str]


@dataclass
class Plan:
    zoo: dict[str, DictConfig]
    settings: list[dict]
    seeds: list[int]
    units: list[Unit]


def attack_settings(cfg: DictConfig) -> list[dict]:
    """Each (attack, eps) of the config as a complete, validated parameter dict with `name`."""
    settings = []
    for attack in cfg.attacks:
        for eps in attack.eps:
            name, params = attack_params({"name": attack.name, **attack.params, "eps": float(eps)})
            settings.append({"name": name, **params})
    return settings


def plan_study(cfg: DictConfig, shard: tuple[int, int] = (0, 1)) -> Plan:
    """Craft units (seed x surrogate x attack setting, each with its targets); every n-th for shard i/n."""
    zoo = {m["name"]: OmegaConf.create(m) for m in expand_zoo(cfg)}
    pairs = select_pairs(list(zoo), list(cfg.surrogates), list(cfg.targets), cfg.pairs, list(cfg.designs))
    settings, seeds = attack_settings(cfg), [int(s) for s in cfg.seeds] or [int(cfg.seed)]
    surrogates = [s for s in zoo if any(p[0] == s for p in pairs)]
    units = [Unit(seed, s, setting, [t for p, t in pairs if p == s])
             for seed in seeds for s in surrogates for setting in settings]
    index, count = shard
    return Plan(zoo, settings, seeds, units[index::count])


def load_test_set(data) -> TestSet:
    """The shared test split of a datamodule."""
    indices = data.indices["test"]
    return TestSet(data.test_dataloader(), data.labels[torch.as_tensor(indices)], data.task, data.label_names,
                   [int(i) for i in indices])


def prediction_table(test: TestSet, clean: torch.Tensor, adv: torch.Tensor, control: torch.Tensor) -> pd.DataFrame:
    """Per-sample labels and target scores on clean, adversarial and control images (one column per
    output for multi-output tasks)."""
    columns = {"sample": test.sample_ids}
    names = test.label_names if test.task != "binary" else [""]
    for kind, values in (("label", test.labels), ("clean", clean), ("adv", adv), ("control", control)):
        values = values.reshape(len(values), -1).float()
        for j, name in enumerate(names):
            columns[f"{kind}_{name}".rstrip("_")] = values[:, j].numpy()
    return pd.DataFrame(columns)


def pair_params(cfg: DictConfig, surrogate: DictConfig, target: DictConfig, setting: dict, seed: int) -> dict:
    """The child run's params (DESIGN.md's MLflow contract)."""
    params = {f"surrogate.{k}": v for k, v in surrogate.items()}
    params.update({f"target.{k}": v for k, v in target.items()})
    params.update({f"attack.{k}": v for k, v in setting.items()})
    params.update({f"data.{k}": v for k, v in cfg.data.items()})
    params["seed"] = seed
    return params


def pair_tags(cfg: DictConfig, surrogate: DictConfig, target: DictConfig) -> dict:
    """Tags that let the MLflow UI filter pairs by factor."""
    return {"kind": "pair", "domain": cfg.data.domain,
            "same_arch": str(surrogate.arch == target.arch), "same_init": str(surrogate.init == target.init),
            "same_data": str(surrogate.dev_set == target.dev_set),
            "whitebox": str(surrogate.name == target.name)}


def study_hash(cfg: DictConfig, version: str) -> str:
    """Identity of a study: its resolved config without where results go, and the code version."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in ("tracking", "output_dir"):
        resolved.pop(key, None)
    return config_hash({"config": resolved, "code": version})


def run_study(cfg: DictConfig | str | Path, shard: tuple[int, int] = (0, 1), dry_run: bool = False):
    """Run a study (or shard `i/n` of it); one row per (seed, surrogate, target, attack, eps).

    Work already logged by an earlier run of the same config and code is read back, not redone.
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
    # every domain's data is read and validated before any tracking store is touched
    data = [datamodule_for(study, "d1") for study in studies]
    tables = [_run_domain(study, datamodule, shard) for study, datamodule in zip(studies, data)]
    if len(tables) == 1:
        return tables[0]
    table = pd.concat(tables, ignore_index=True)
    table.attrs["summary"] = "\n".join(t.attrs.get("summary", "") for t in tables)
    return table


def _run_domain(cfg: DictConfig, data, shard: tuple[int, int]) -> pd.DataFrame:
    """One domain's study on its validated d1 datamodule (for the shared test set and manifest)."""
    plan = plan_study(cfg, shard)
    uri = cfg.tracking.uri or default_tracking_uri()
    experiment_id = setup_experiment(uri, cfg.tracking.experiment or cfg.name)
    version = code_version()
    output_dir = Path(cfg.output_dir)
    runs = StudyRuns(uri, experiment_id, study_hash(cfg, version), output_dir / "locks")

    with runs.parent(cfg.name):
        mlflow.log_params({"study": cfg.name, "seeds": ",".join(map(str, plan.seeds)), "models": ",".join(plan.zoo),
                           "attacks": ",".join(sorted({s["name"] for s in plan.settings})),
                           "eps": ",".join(sorted({str(s["eps"]) for s in plan.settings})),
                           "pairs": cfg.pairs, "data.domain": cfg.data.domain})
        mlflow.set_tags({"git_sha": version, "domain": cfg.data.domain})
        mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config.yaml")
        study = _Evaluation(cfg, plan, runs, experiment_id, version, AdversarialSetCache(output_dir / "adversarial_sets"),
                            load_test_set(data))
        with tqdm(plan.units, desc="crafting + evaluating", unit="set") as units:  # closed (own line) on errors
            rows = [row for unit in units for row in study.run(unit)]
        table = with_factors(pd.DataFrame(rows, columns=TABLE_COLUMNS), plan.zoo, cfg.data.domain)
        if shard == (0, 1):
            table.attrs["summary"] = write_outputs(table, output_dir / cfg.name / "report", study.examples,
                                                   data.manifest)
    return table


class _Evaluation:
    """Crafts units and evaluates their targets, with everything per seed computed once."""

    def __init__(self, cfg, plan: Plan, runs: StudyRuns, experiment_id: str, version: str,
                 cache: AdversarialSetCache, test: TestSet):
        self.cfg, self.plan, self.runs, self.experiment_id, self.version = cfg, plan, runs, experiment_id, version
        self.cache, self.test, self.trained, self.clean, self.bootstraps = cache, test, {}, {}, {}
        self.examples: dict | None = None

    def seeded(self, seed: int) -> DictConfig:
        return OmegaConf.merge(self.cfg, {"seed": seed})

    def model(self, name: str, seed: int):
        """(module, best validation AUC) of a zoo model at a seed; trained or read back once."""
        if (name, seed) not in self.trained:
            self.trained[name, seed] = train_model(self.seeded(seed), self.plan.zoo[name])
        return self.trained[name, seed]

    def clean_scores(self, target: str, seed: int) -> torch.Tensor:
        if (target, seed) not in self.clean:
            model = self.model(target, seed)[0]
            self.clean[target, seed] = predict(model, self.test.batches(), self.test.task,
                                               self.cfg.crafting.device)
        return self.clean[target, seed]

    def intervals(self, target: str, seed: int, adv_probs: torch.Tensor) -> dict:
        if self.cfg.bootstrap_resamples < 1:
            return {c: float("nan") for c in CI_COLUMNS}
        if (target, seed) not in self.bootstraps:
            self.bootstraps[target, seed] = PairedBootstrap(
                self.test.task, self.test.labels.numpy(), self.clean_scores(target, seed).numpy(),
                n_resamples=self.cfg.bootstrap_resamples, seed=seed)
        return self.bootstraps[target, seed].interval(adv_probs.numpy())

    def adversarial_set(self, unit: Unit) -> tuple[str, float]:
        """(cache key, seconds spent crafting it, the surrogate's training excluded) of a unit's set,
        crafted once, chunk by chunk, into the on-disk cache."""
        surrogate_cfg = self.plan.zoo[unit.surrogate]
        key = set_key(model_key(self.seeded(unit.seed), surrogate_cfg), unit.setting, "test", unit.seed,
                      self.cfg.crafting.precision)
        training = 0.0

        def make():
            nonlocal training
            start = time.perf_counter()
            model = self.model(unit.surrogate, unit.seed)[0]
            training = time.perf_counter() - start
            return craft_set(model, self.test.loader, self.test.task, unit.setting, unit.seed,
                             self.cfg.crafting)

        start = time.perf_counter()
        self.cache.ensure(key, make)
        return key, time.perf_counter() - start - training

    def distortion(self, key: str) -> dict:
        totals = PerturbationTotals()
        for clean, (adv, _) in zip(self.test.batches(), self.cache.chunks(key), strict=True):
            totals.add(clean, adv)
        return totals.result()

    def run(self, unit: Unit) -> list[dict]:
        """Rows of one unit in target order: read back from finished pair runs or computed and logged."""
        results, pending = {}, {}
        for target in unit.targets:
            params = pair_params(self.cfg, self.plan.zoo[unit.surrogate], self.plan.zoo[target], unit.setting,
                                 unit.seed)
            key = config_hash({"params": params, "train": OmegaConf.to_container(self.cfg.train),
                               "bootstrap": self.cfg.bootstrap_resamples, "code": self.version,
                               "precision": self.cfg.crafting.precision})
            done = self.runs.finished_pair(key)
            if done is None:
                pending[target] = (params, key)
            else:
                results[target] = {m: done.data.metrics.get(m, float("nan")) for m in METRICS}
        if pending or self.examples is None:
            set_id, craft_seconds = self.adversarial_set(unit)
            if self.examples is None:
                adv, ctrl = next(self.cache.chunks(set_id))
                self.examples = example_images(next(self.test.batches()), adv, ctrl, self.cfg.data.domain,
                                               f"{unit.surrogate}: {unit.setting['name']} eps={unit.setting['eps']:g}")
        if pending:
            distortion = self.distortion(set_id)
        for target, (params, key) in pending.items():
            results[target] = self.evaluate(unit, target, set_id, params, key,
                                            {**distortion, "craft_seconds": craft_seconds})
        return [{"seed": unit.seed, "surrogate": unit.surrogate, "target": t, "attack": unit.setting["name"],
                 "eps": unit.setting["eps"], **results[t]} for t in unit.targets]

    def evaluate(self, unit: Unit, target: str, set_id: str, params: dict, key: str, extra: dict) -> dict:
        """Score the target on one crafted set (streamed from the cache) and log the pair's child run."""
        test, device = self.test, self.cfg.crafting.device
        start = time.perf_counter()
        model, target_val_auc = self.model(target, unit.seed)
        clean = self.clean_scores(target, unit.seed)
        scored = [(predict(model, [adv], test.task, device), predict(model, [ctrl], test.task, device))
                  for adv, ctrl in self.cache.chunks(set_id)]
        adv_probs, ctrl_probs = (torch.cat(probs) for probs in zip(*scored))
        metrics = {
            "auc_clean": auc(test.task, test.labels, clean),
            "auc_adv": auc(test.task, test.labels, adv_probs),
            "auc_control": auc(test.task, test.labels, ctrl_probs),
            "asr": attack_success_rate(test.task, test.labels, clean, adv_probs),
            **self.intervals(target, unit.seed, adv_probs), **extra,
        }
        metrics["auc_pct_clean"] = 100.0 * metrics["auc_adv"] / metrics["auc_clean"]
        metrics["eval_seconds"] = time.perf_counter() - start
        surrogate_cfg, target_cfg = self.plan.zoo[unit.surrogate], self.plan.zoo[target]
        tags = {**pair_tags(self.cfg, surrogate_cfg, target_cfg), "config_hash": key, "git_sha": self.version,
                "mlflow.parentRunId": self.runs.parent_id}
        with mlflow.start_run(experiment_id=self.experiment_id, nested=True, tags=tags,
                              run_name=f"{unit.surrogate}->{target} {unit.setting['name']} eps={unit.setting['eps']}"):
            mlflow.log_params(params)
            mlflow.log_metrics({**metrics, "surrogate_val_auc": self.model(unit.surrogate, unit.seed)[1],
                                "target_val_auc": target_val_auc})
            log_frame(prediction_table(test, clean, adv_probs, ctrl_probs), "predictions.csv")
        return metrics


def format_table(table: pd.DataFrame) -> str:
    """The headline columns of a result table as Markdown."""
    return markdown_table(table[RESULT_COLUMNS]) if not table.empty else "(no results)\n"
