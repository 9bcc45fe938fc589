"""The local executor: does a scheduler's work in one process, in the scheduler's order.

Each model is trained or read back once, each target scores the clean test set once and each
adversarial set is crafted once (into the on-disk cache) and read by all its pairs. A pair already
in the store is read back; the others are evaluated (`evaluation.evaluate_pair`) and logged.
"""
from __future__ import annotations

import time

import torch
from omegaconf import OmegaConf

from attacks import AdversarialSetCache
from datamodules import DomainData

from .batches import SetBatches, TestBatches
from .bootstrap import PairedBootstrap
from .datasets import SplitDataset
from .evaluation import PAIR_METRICS, TestSet, evaluate_pair, prediction_table, set_distortion
from .identity import code, data_identity
from .outputs import example_images
from .predicting import Predictor
from .runs import StudyRuns
from .scheduler import ModelJob, PairJob, Scheduler, SetGroup, SetJob
from .training import TrainedModel, train_model
from .write_errors import writing
from .zoo import entry_params, hardening, is_ensemble
from .zoo_models import ensemble_of, training_entry, with_defence


class LocalExecutor:
    """Runs a `Scheduler`'s work here and now, set group by set group (`run_group`: its result rows)."""

    def __init__(self, scheduler: Scheduler, store: StudyRuns, cache: AdversarialSetCache, data: DomainData,
                 test: TestSet, test_input: SplitDataset):
        self.scheduler, self.cfg, self.store, self.cache = scheduler, scheduler.cfg, store, cache
        self.data, self.test, self.test_input = data, test, test_input
        self.predictor = Predictor(self.cfg)
        self.test_batches = TestBatches(OmegaConf.to_container(self.cfg.data, resolve=True), test.loader.dataset)
        self.trained: dict[ModelJob, TrainedModel] = {}
        self.clean: dict[ModelJob, torch.Tensor] = {}
        self.bootstraps: dict[ModelJob, PairedBootstrap] = {}

    def model(self, job: ModelJob) -> TrainedModel:
        """A zoo model at a seed, trained or read back once (a defended model: its twin's training
        run behind the defence; an ensemble: its members', `experiments.zoo_models`)."""
        if job not in self.trained:
            entry = self.scheduler.zoo[job.name]
            if is_ensemble(entry):
                self.trained[job] = ensemble_of([self.model(m) for m in self.scheduler.members(job)], entry)
            else:
                cfg = self.scheduler.seeded(job.seed)
                self.trained[job] = with_defence(train_model(cfg, training_entry(entry), self.data), entry)
        return self.trained[job]

    def clean_scores(self, job: ModelJob) -> torch.Tensor:
        if job not in self.clean:
            self.clean[job] = self.predictor.scores(self.model(job).module, self.test_batches)
        return self.clean[job]

    def craft(self, job: SetJob) -> float:
        """Store the set in the cache unless it is there; seconds spent crafting (training excluded)."""
        if job.key in self.cache:
            return 0.0
        surrogate = self.model(job.surrogate).module
        start = time.perf_counter()
        setting = job.setting
        label = f"crafting {job.surrogate.name} {setting['name']} eps={setting['eps']:g}"
        with writing(self.cache.root, f"adversarial set {job.key}"):
            self.cache.ensure(job.key, lambda write: self.predictor.craft(
                surrogate, self.test_batches, setting, job.seed, self.test.task, write, label))
        return time.perf_counter() - start

    def run_group(self, group: SetGroup) -> list[dict]:
        """Rows of one set's pairs in target order: read back from the store or evaluated and logged."""
        found = {pair.key: self.store.finished_pair(pair.key) for pair in group.pairs}
        pending = [pair for pair in group.pairs if found[pair.key] is None]
        rows = {key: stored_row(run) for key, run in found.items() if run is not None}
        if pending:
            shared = self.crafted(group.set)
            for pair in pending:
                rows[pair.key] = self.evaluate(pair, shared)
        return group_rows(group, rows)

    def crafted(self, job: SetJob) -> dict:
        """Craft the set unless it is cached; the numbers all its pairs share (distortion, crafting seconds)."""
        craft_seconds = self.craft(job)
        return {**set_distortion(self.test, self.cache.chunks(job.key)), "craft_seconds": craft_seconds}

    def bootstrap(self, job: ModelJob) -> PairedBootstrap | None:
        """A target's paired bootstrap (its clean AUC per resample computed once), None when off."""
        if self.cfg.bootstrap_resamples < 1:
            return None
        if job not in self.bootstraps:
            self.bootstraps[job] = PairedBootstrap(self.test.task, self.test.labels.numpy(),
                                                   self.clean_scores(job).numpy(),
                                                   n_resamples=self.cfg.bootstrap_resamples, seed=job.seed)
        return self.bootstraps[job]

    def evaluate(self, pair: PairJob, shared: dict) -> dict:
        """Score the target on the pair's set and log the pair run; the result row's numbers and run id.
        Under the pair's lock: a pair another process logged meanwhile is read back, not done twice."""
        with self.store.pair_lock(pair.key):
            found = self.store.finished_pair(pair.key)
            return stored_row(found) if found is not None else self._evaluate(pair, shared)

    def _evaluate(self, pair: PairJob, shared: dict) -> dict:
        start = time.perf_counter()
        target, clean = self.model(pair.target), self.clean_scores(pair.target)
        adversarial, control = self.predictor.set_scores(target.module, SetBatches(self.cache.root, pair.set.key))
        scores = evaluate_pair(self.test, clean, adversarial, control, self.bootstrap(pair.target))
        metrics = {**scores.metrics, **shared, "eval_seconds": time.perf_counter() - start}
        surrogate = self.model(pair.set.surrogate)
        setting = pair.set.setting
        run_id = self.store.log_pair(
            f"{pair.set.surrogate.name}->{pair.target.name} {setting['name']} eps={setting['eps']}", pair.key,
            self.pair_params(pair), {**self.pair_tags(pair), "set_key": pair.set.key},
            {**metrics, "surrogate_val_auc": surrogate.val_auc, "target_val_auc": target.val_auc},
            prediction_table(self.test, clean, scores.adversarial, scores.control), self.test_input)
        return {**metrics, "run_id": run_id}

    def pair_params(self, pair: PairJob) -> dict:
        """The pair run's params (docs/architecture.md, "MLflow contract")."""
        zoo = self.scheduler.zoo
        params = {f"surrogate.{k}": v for k, v in entry_params(zoo[pair.set.surrogate.name]).items()}
        params.update({f"target.{k}": v for k, v in entry_params(zoo[pair.target.name]).items()})
        params.update({f"attack.{k}": v for k, v in pair.set.setting.items()})
        params.update({f"data.{k}": v for k, v in data_identity(self.cfg).items()})
        params["seed"] = pair.set.seed
        return params

    def pair_tags(self, pair: PairJob) -> dict:
        """Tags that let the MLflow UI filter pairs by factor."""
        surrogate, target = self.scheduler.zoo[pair.set.surrogate.name], self.scheduler.zoo[pair.target.name]
        return {"domain": self.cfg.data.domain, "same_arch": str(surrogate.arch == target.arch),
                "same_init": str(surrogate.init == target.init), "same_data": str(surrogate.dev_set == target.dev_set),
                "whitebox": str(surrogate.name == target.name), "defended": str(hardening(target) != "none"),
                "git_sha": code()}


def stored_row(run) -> dict:
    """A pair's result numbers and run id, read back from its FINISHED run."""
    return {**{m: run.data.metrics.get(m, float("nan")) for m in PAIR_METRICS}, "run_id": run.info.run_id}


def group_rows(group: SetGroup, rows: dict[str, dict]) -> list[dict]:
    """A set's result rows in target order, from each pair's numbers and run id (`rows`, by pair key)."""
    setting = group.set.setting
    return [{"seed": group.set.seed, "surrogate": group.set.surrogate.name, "target": pair.target.name,
             "attack": setting["name"], "eps": setting["eps"], **rows[pair.key]} for pair in group.pairs]


def examples_of(executor: LocalExecutor, group: SetGroup, domain: str) -> dict:
    """The report's example images: the first test batch, clean and attacked by the group's set."""
    executor.craft(group.set)
    adv, ctrl = next(executor.cache.chunks(group.set.key))
    setting = group.set.setting
    return example_images(next(executor.test.batches()), adv, ctrl, domain,
                          f"{group.set.surrogate.name}: {setting['name']} eps={setting['eps']:g}")

