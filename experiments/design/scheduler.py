"""A study's work graph: the models to train, the adversarial sets to craft after their surrogate and
the pair evaluations to run after their target and set, each named by its identity.

The scheduler only says what work there is and what it depends on; an executor does it (the local
one in `experiments.execution`). Shard `i/n` keeps every n-th adversarial set with its pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from .facts import StudyFacts
from .identity import attack_grid, pair_key, query_key, set_key
from .model_kinds import LOADED, kind_of
from .queries import CLEAN, query_settings, start_setting
from .zoo import expand_zoo, study_pairs


@dataclass(frozen=True)
class ModelJob:
    """One zoo model at one study seed, trained or read back. `key` is its training identity
    (`model_key`), which a defended model shares with its undefended twin; an ensemble is not
    trained: its key is its `network_key` and its members are jobs of their own; nor is an external
    model (its key is its `network_key`)."""
    name: str
    seed: int
    key: str


@dataclass(eq=False)
class SetJob:
    """Craft one adversarial test set on a surrogate (after its `ModelJob`)."""
    surrogate: ModelJob
    setting: dict  # the complete, validated attack parameters with `name`
    key: str

    @property
    def seed(self) -> int:
        return self.surrogate.seed


@dataclass(eq=False)
class PairJob:
    """Evaluate one target on one adversarial set (after the target's `ModelJob` and the `SetJob`)."""
    set: SetJob
    target: ModelJob
    key: str


@dataclass(eq=False)
class QueryJob:
    """Query-attack one target with one query setting from one start (after the target's `ModelJob`
    and, from a transfer set, the start's `SetJob`)."""
    setting: dict  # the complete query setting (design.queries.query_settings)
    target: ModelJob
    start: SetJob | None  # None: from the clean images
    start_name: str  # "clean" or the surrogate's name
    key: str

    @property
    def models(self) -> list[ModelJob]:
        """The models it needs: its target, and the surrogate of its start set."""
        return [self.target, *([self.start.surrogate] if self.start is not None else [])]


@dataclass(eq=False)
class SetGroup:
    """An adversarial set and the pair evaluations that read it, in target order."""
    set: SetJob
    pairs: list[PairJob] = field(default_factory=list)


class Scheduler:
    """The work of one study (or shard of it), in an order every executor may follow: sets grouped by
    seed, surrogate and attack setting, each with its pairs; named by identities that hold `facts`."""

    def __init__(self, cfg: DictConfig, facts: StudyFacts, shard: tuple[int, int] = (0, 1)):
        self.cfg, self.facts = cfg, facts
        self.zoo = {m["name"]: OmegaConf.create(m) for m in expand_zoo(cfg)}
        self.kinds = {name: kind_of(entry) for name, entry in self.zoo.items()}
        pairs = study_pairs(cfg, list(self.zoo.values()))
        self.settings = attack_grid(cfg)
        self.seeds = [int(s) for s in cfg.seeds] or [int(cfg.seed)]
        surrogates = [s for s in self.zoo if any(p[0] == s for p in pairs)]
        seeded = {seed: self.seeded(seed) for seed in self.seeds}
        models: dict[tuple[str, int], ModelJob] = {}
        networks: dict[tuple[str, int], str] = {}

        def model(name: str, seed: int) -> ModelJob:
            if (name, seed) not in models:
                kind = self.kinds[name]
                models[name, seed] = ModelJob(name, seed, kind.job_key(seeded[seed], facts))
                if kind.member_names:
                    self.ensembles[models[name, seed]] = [model(m, seed) for m in kind.member_names]
            return models[name, seed]

        def network(name: str, seed: int) -> str:
            if (name, seed) not in networks:
                networks[name, seed] = self.kinds[name].network_key(seeded[seed], facts)
            return networks[name, seed]

        self.ensembles: dict[ModelJob, list[ModelJob]] = {}
        groups = []
        for seed in self.seeds:
            for surrogate in surrogates:
                for setting in self.settings:
                    job = SetJob(model(surrogate, seed), setting,
                                 set_key(network(surrogate, seed), setting, seed, cfg.crafting.precision,
                                         cfg.crafting.channels_last))
                    targets = [t for s, t in pairs if s == surrogate]
                    groups.append(SetGroup(job, [PairJob(job, model(t, seed), pair_key(cfg, job.key, network(t, seed)))
                                                 for t in targets]))
        index, count = shard
        self.groups: list[SetGroup] = groups[index::count]
        sets = {group.set.key: group.set for group in groups}
        queries, seed = [], self.seeds[0]  # query attacks run at the study's first seed
        for setting in query_settings(cfg):
            for start in setting["starts"]:
                job = None
                if start != CLEAN:
                    attack = start_setting(cfg, setting["eps"])
                    key = set_key(network(start, seed), attack, seed, cfg.crafting.precision,
                                  cfg.crafting.channels_last)
                    job = sets.setdefault(key, SetJob(model(start, seed), attack, key))
                for target in dict.fromkeys(t for _, t in pairs):
                    queries.append(QueryJob(setting, model(target, seed), job, start, query_key(
                        seeded[seed], network(target, seed), job.key if job else CLEAN, setting, facts)))
        self.queries: list[QueryJob] = queries[index::count]

    def seeded(self, seed: int) -> DictConfig:
        """The study config at one of its seeds."""
        return OmegaConf.merge(self.cfg, {"seed": seed})

    def members(self, job: ModelJob) -> list[ModelJob]:
        """The trained models behind a job: an ensemble's members, else the job itself."""
        return self.ensembles.get(job, [job])

    def model_jobs(self) -> list[ModelJob]:
        """Every trained model some set or pair of this shard needs, each training identity once
        (ensembles stand for their members; a defended model and its twin are one training;
        external models are not trained)."""
        jobs = [job for group in self.groups for job in (group.set.surrogate, *(p.target for p in group.pairs))]
        jobs += [job for query in self.queries for job in query.models]
        jobs = [job for job in jobs if self.kinds[job.name].obtained != LOADED]
        trainings: dict[str, ModelJob] = {}
        for job in jobs:
            for member in self.members(job):
                known = trainings.get(member.key)
                if known is None or (self.kinds[known.name].defended and not self.kinds[member.name].defended):
                    trainings[member.key] = member  # named after the undefended twin when it is in the study
        return list(trainings.values())

    def set_jobs(self) -> list[SetJob]:
        """The sets of the pairs, then the start sets of query attacks that no pair reads."""
        sets = [group.set for group in self.groups]
        keys = {job.key for job in sets}
        starts = {q.start.key: q.start for q in self.queries if q.start is not None and q.start.key not in keys}
        return sets + list(starts.values())

    def pair_jobs(self) -> list[PairJob]:
        return [pair for group in self.groups for pair in group.pairs]
