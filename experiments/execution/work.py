"""A domain study's work, one piece at a time: the functions every executor calls.

`StudyWork` trains or reads back a model, crafts a set into the cache, and evaluates or reads back
a pair, each once per process; executors only decide where and in which order these run. It is
built from a `WorkSpec` (what any process needs to rebuild it: the domain's config with its
locations spelled out, the shard, the study's parent run), the domain's data and the process's
device group.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from attacks import AdversarialSetCache
from attacks.cache import SetError
from attacks.registry import threat
from datamodules import DomainData
from datamodules.real_cache import DataCache
from datamodules.synthetic.cache import cache_root
from medcommon.write_errors import writing

from ..design.facts import StudyFacts
from ..design.identity import data_identity, study_key
from ..design.scheduler import ModelJob, PairJob, Scheduler, SetGroup, SetJob
from ..design.model_kinds import LOADED
from ..design.zoo import entry_params, hardening
from ..report.bootstrap import PairedBootstrap
from ..report.outputs import example_images
from ..store.artifact_formats import prediction_table
from ..store.datasets import split_dataset
from ..store.run_store import RunStore, StudyContext
from ..store.runs import StudyRuns
from ..store.tracking import flag
from .devices import DeviceGroup
from .evaluation import PAIR_METRICS, evaluate_pair, load_test_set, set_distortion
from .networks import OBTAIN
from .predict_batches import SetBatches, TestBatches
from .predicting import Predictor
from .training import TrainedModel


def read_data(cfg: DictConfig, cache: DataCache | None = None) -> DomainData:
    """A domain's data, read and checked once (through `cache`, the study's `DataCache`), with its test
    split and d1 checked to be non-empty (d1 runs out of patients first: d2 is at least as large, d1/10
    and d2/2 keep at least one)."""
    with writing(cache_root(cfg.data.cache_dir) or "the data cache", f"the generated {cfg.data.domain} data"):
        data = DomainData(OmegaConf.to_container(cfg.data, resolve=True), cache).prepare()
    data.datamodule("d1").setup()
    return data


@dataclass(frozen=True)
class WorkSpec:
    """What a process needs to rebuild a domain study's work: its config (`StudyContext.located`), the
    shard, the study's parent run and its facts (code version, data content)."""
    cfg: DictConfig
    shard: tuple[int, int]
    parent_id: str
    facts: StudyFacts


class StudyWork:
    """The pieces of one domain study's work in this process: each model trained or read back once,
    each target's clean scores computed once, each set crafted once (into the on-disk cache), each
    pair read back from the store or evaluated and logged. `runs`: the study's runs, when this
    process has them already (a Ray actor's are rebuilt from the spec)."""

    def __init__(self, spec: WorkSpec, data: DomainData, group: DeviceGroup, runs: StudyRuns | None = None):
        cfg = self.cfg = spec.cfg
        self.spec, self.data, self.group = spec, data, group
        self.scheduler = Scheduler(cfg, spec.facts, spec.shard)
        self.store = runs or StudyRuns(RunStore.of(StudyContext.of(cfg)), study_key(cfg, spec.facts), spec.parent_id)
        self.cache = AdversarialSetCache(Path(cfg.output_dir) / "adversarial_sets")
        test_split = data.datamodule("d1")
        self.test, self.test_input = load_test_set(test_split), split_dataset(cfg.data, test_split, "test")
        self.predictor = Predictor(cfg, group)
        self.test_batches = TestBatches(OmegaConf.to_container(cfg.data, resolve=True),
                                        self.test.loader.dataset)
        self.trained: dict[ModelJob, TrainedModel] = {}
        self.clean: dict[ModelJob, torch.Tensor] = {}
        self.bootstraps: dict[ModelJob, PairedBootstrap] = {}

    def model(self, job: ModelJob) -> TrainedModel:
        """A zoo model at a seed, obtained once as its kind says (`networks.OBTAIN`: trained or read
        back, a defended model its twin's training run behind the defence; composed of its members,
        an ensemble; loaded, an external model, an endpoint's answers cached under
        `output_dir/external_scores`)."""
        if job not in self.trained:
            kind = self.scheduler.kinds[job.name]
            self.trained[job] = OBTAIN[kind.obtained](self, job, kind)
        return self.trained[job]

    def clean_scores(self, job: ModelJob) -> torch.Tensor:
        if job not in self.clean:
            self.clean[job] = self.predictor.scores(self.model(job).module, self.test_batches)
        return self.clean[job]

    def ensure_set(self, job: SetJob) -> float:
        """Store the set in the cache unless it is there; seconds spent crafting (training excluded)."""
        if job.key in self.cache:
            return 0.0
        surrogate = self.model(job.surrogate).module
        start = time.perf_counter()
        setting = job.setting
        label = f"crafting {job.surrogate.name} {attack_label(setting)}"
        with writing(self.cache.root, f"adversarial set {job.key}"):
            self.cache.ensure(job.key, job.seed, lambda write: self.predictor.adversarial_set(
                surrogate, self.test_batches, setting, job.seed, self.test.task, write, label, self.test.label_names))
        return time.perf_counter() - start

    def set_numbers(self, job: SetJob) -> dict:
        """Craft the set unless it is cached; the numbers all its pairs share (distortion, crafting seconds)."""
        craft_seconds = self.ensure_set(job)
        clean, measured = itertools.tee(self.test.batches())  # one read of the test split for both
        return {**set_distortion(measured, self.cache.chunks(job.key, clean)), "craft_seconds": craft_seconds}

    def set_targets(self, job: SetJob) -> torch.Tensor | None:
        """The attacker's target of each test image, stored with a targeted set; None for an untargeted one."""
        if threat(job.setting)[0] == "untargeted":
            return None
        targets = self.cache.targets(job.key, self.test.batches())
        if targets is None:
            raise SetError(f"{self.cache.path(job.key)}: a targeted set stored without its targets")
        return targets

    def stored(self, group: SetGroup) -> tuple[dict[str, dict], list[PairJob]]:
        """A set's pairs the store holds FINISHED (their rows, by pair key) and those still to do."""
        found = {pair.key: self.store.finished_pair(pair.key) for pair in group.pairs}
        rows = {key: stored_row(run) for key, run in found.items() if run is not None}
        return rows, [pair for pair in group.pairs if found[pair.key] is None]

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
        """A pair's numbers and run id, under the pair's lock: read back when a FINISHED run has its
        identity (logged meanwhile by another process, or by an earlier attempt whose unfinished run
        is deleted), else the target scored on the pair's set and the pair run logged."""
        with self.store.pair_lock(pair.key):
            found = self.store.finished_pair(pair.key)
            return stored_row(found) if found is not None else self._evaluate(pair, shared)

    def _evaluate(self, pair: PairJob, shared: dict) -> dict:
        start = time.perf_counter()
        target, clean = self.model(pair.target), self.clean_scores(pair.target)
        endpoint = getattr(target.module, "endpoint", None)
        queried = endpoint.queries if endpoint is not None else 0
        adversarial, control = self.predictor.set_scores(
            target.module, SetBatches(self.cache.root, pair.set.key, self.test_batches))
        scores = evaluate_pair(self.test, clean, adversarial, control, self.bootstrap(pair.target),
                               self.set_targets(pair.set))
        metrics = {**scores.metrics, **shared, "eval_seconds": time.perf_counter() - start}
        if endpoint is not None:  # the set's images whose scores came from the endpoint (now or before)
            metrics["queries"] = endpoint.queries - queried
        surrogate = self.model(pair.set.surrogate)
        setting = pair.set.setting
        models = {f"{role}_run_id": model.run_id for role, model in (("surrogate", surrogate), ("target", target))
                  if model.run_id}  # their training runs (an ensemble's: its members', comma-separated)
        run_id = self.store.log_pair(
            f"{pair.set.surrogate.name}->{pair.target.name} {attack_label(setting)}", pair.key,
            self.pair_params(pair), {**self.pair_tags(pair), "set_key": pair.set.key, **models},
            {**metrics, "surrogate_val_auc": surrogate.val_auc, "target_val_auc": target.val_auc},
            prediction_table(self.test.sample_ids, self.test.label_names, self.test.task, self.test.labels, clean,
                             scores.adversarial, scores.control), self.test_input)
        return {**metrics, "run_id": run_id}

    def pair_params(self, pair: PairJob) -> dict:
        """The pair run's params (docs/architecture.md, "MLflow contract")."""
        zoo = self.scheduler.zoo
        params = {f"surrogate.{k}": v for k, v in entry_params(zoo[pair.set.surrogate.name]).items()}
        params.update({f"target.{k}": v for k, v in entry_params(zoo[pair.target.name]).items()})
        params.update({f"attack.{k}": v for k, v in pair.set.setting.items()})
        params.update({f"data.{k}": v for k, v in data_identity(self.cfg, self.spec.facts).items()})
        params["seed"] = pair.set.seed
        return params

    def pair_tags(self, pair: PairJob) -> dict:
        """Tags that let the MLflow UI filter pairs by factor."""
        surrogate, target = self.scheduler.zoo[pair.set.surrogate.name], self.scheduler.zoo[pair.target.name]
        return {"domain": self.cfg.data.domain, "same_arch": flag(surrogate.arch == target.arch),
                "same_init": flag(surrogate.init == target.init),
                "same_data": flag(surrogate.dev_set == target.dev_set),
                "whitebox": flag(surrogate.name == target.name), "defended": flag(hardening(target) != "none"),
                "git_sha": self.spec.facts.code, **self.scheduler.kinds[pair.target.name].pair_tags(pair.target.key)}

    def external_changes(self) -> list[str]:
        """One line per external target whose earlier pairs in the store were evaluated on another
        model behind the same path, URI or endpoint (those pairs are not read back as its own)."""
        lines = []
        loaded = [(name, kind) for name, kind in self.scheduler.kinds.items() if kind.obtained == LOADED]
        for name, kind in loaded:
            entry = kind.entry
            tags = kind.pair_tags(kind.network_key(self.cfg, self.spec.facts))
            source = tags["external_source"]
            runs = self.store.store.search(f"tags.kind = 'pair' and tags.external_source = '{source}'",
                                           max_results=1000)
            earlier = {run.data.tags.get("target_network") for run in runs} - {tags["target_network"]}
            if earlier:
                where = entry.external.path or entry.external.uri
                lines.append(f"models.{name}: the model behind {where} has changed since {len(runs)} earlier pair "
                             "run(s) (its file, registry version or probe scores differ); its pairs are evaluated anew")
        return lines

    def examples(self, group: SetGroup) -> dict:
        """The report's example images: the first test batch, clean and attacked by the group's set
        (read from the cache: `ensure_set` stores it first)."""
        clean = next(self.test.batches())
        adv, ctrl = next(self.cache.chunks(group.set.key, [clean]))
        setting = group.set.setting
        return example_images(clean, adv, ctrl, self.cfg.data.domain,
                              f"{group.set.surrogate.name}: {attack_label(setting)}")


def attack_label(setting: dict) -> str:
    """An attack setting as runs and progress lines name it: `pgd eps=0.01`, `pgd l2 least_likely eps=1`."""
    target, norm = threat(setting)
    parts = [setting["name"], *([norm] if norm != "linf" else []), *([str(target)] if target != "untargeted" else [])]
    return f"{' '.join(parts)} eps={setting['eps']:g}"


def stored_row(run) -> dict:
    """A pair's result numbers and run id, read back from its FINISHED run."""
    return {**{m: run.data.metrics.get(m, float("nan")) for m in PAIR_METRICS}, "run_id": run.info.run_id}


def group_rows(group: SetGroup, rows: dict[str, dict]) -> list[dict]:
    """A set's result rows in target order, from each pair's numbers and run id (`rows`, by pair key)."""
    setting = group.set.setting
    target, norm = threat(setting)
    return [{"seed": group.set.seed, "surrogate": group.set.surrogate.name, "target": pair.target.name,
             "attack": setting["name"], "eps": setting["eps"], "norm": norm, "attack_target": str(target),
             **rows[pair.key]} for pair in group.pairs]
