"""What a study will do, worked out from its config alone: per domain the data, the models it
needs, the adversarial sets and the pairs. Reads no data in bulk and touches no store."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from datamodules import DomainData
from datamodules.real_cache import DataCache
from datamodules.readers.source import positive_label
from datamodules.sources import channels
from datamodules.splits import DEV_SETS, dev_set_indices, one_class_problem, split_manifest
from datamodules.synthetic import GENERATORS
from datamodules.synthetic.cache import cache_root, entry_path, generator_params

from ..design.config import domain_config
from ..design.facts import StudyFacts
from ..design.scheduler import ModelJob, PairJob, QueryJob, Scheduler, SetJob
from .facts import code_version, study_facts


@dataclass
class DataOutline:
    """A domain's data as far as the config tells: source, size, split sizes, synthetic cache."""

    source: str
    root: str
    images: int | None  # None: unknown until the source is indexed
    channels: int
    size: int
    split_sizes: dict[str, int] = field(default_factory=dict)  # test, <dev_set>/train, <dev_set>/val
    cache_file: Path | None = None  # synthetic: where the generated set is (or will be) cached
    decode_seconds: float = 0.0  # real: decoding and resizing the images not yet in the cache, timed
    decode_each_read: bool = False  # real without a cache (data.cache_dir=none): every read decodes again
    fingerprint: str = ""  # real: the data's content (`DomainData.fingerprint`), what the identities hold
    positive_label: str = ""  # binary: the class its AUCs score ("" until the source is indexed)

    @property
    def image_bytes(self) -> int:
        return self.channels * self.size * self.size


@dataclass
class DomainWork:
    """One domain's sub-study: its config, its data and its scheduler (the models it needs, the sets
    it crafts and the pairs it evaluates, each job named by its identity, which holds `facts`)."""

    cfg: DictConfig
    data: DataOutline
    scheduler: Scheduler
    problems: list[str]
    facts: StudyFacts

    @property
    def models(self) -> list[ModelJob]:
        return self.scheduler.model_jobs()

    @property
    def sets(self) -> list[SetJob]:
        return self.scheduler.set_jobs()

    @property
    def pairs(self) -> list[PairJob]:
        return self.scheduler.pair_jobs()

    @property
    def queries(self) -> list[QueryJob]:
        return self.scheduler.queries

    def zoo_entry(self, job: ModelJob) -> DictConfig:
        return self.scheduler.zoo[job.name]


def domain_configs(cfg: DictConfig) -> list[DictConfig]:
    return [domain_config(cfg, domain) for domain in cfg.domains] or [cfg]


def outline(cfg: DictConfig, cache: DataCache | None = None) -> list[DomainWork]:
    """The work of every domain of the study (split problems are listed, not raised), its data read
    through `cache` (the study's `DataCache`)."""
    work, cache, code = [], DataCache() if cache is None else cache, code_version()
    for sub in domain_configs(cfg):
        facts = study_facts(sub, cache, code)
        scheduler = Scheduler(sub, facts)
        dev_sets = {scheduler.zoo[job.name].dev_set for job in scheduler.model_jobs()}
        data, problems = data_outline(sub.data, dev_sets, cache)
        work.append(DomainWork(sub, data, scheduler, problems, facts))
    return work


def data_outline(data: DictConfig, dev_sets: set[str],
                 cache: DataCache | None = None) -> tuple[DataOutline, list[str]]:
    """What the config says about a domain's data, and the empty splits among the test set and
    those of `dev_sets`."""
    source, domain, size = data.source, data.domain, int(data.image_size)
    if source == "synthetic":
        patients = np.arange(data.num_patients).repeat(data.images_per_patient)
        cache = cache_root(data.cache_dir)
        params = generator_params(domain, data.num_patients, data.images_per_patient, size, data.seed,
                                  data.signal)
        _, names, task = GENERATORS[domain]
        info = DataOutline(source, "", len(patients), channels(source, domain), size,
                          cache_file=entry_path(params, cache) if cache is not None else None,
                          positive_label=positive_label(task, names))
    else:
        return real_data_outline(data, dev_sets, size, DataCache() if cache is None else cache)
    manifest = split_manifest(patients, int(data.seed), float(data.test_fraction), float(data.val_fraction))
    return info, split_problems(info, manifest, domain, dev_sets)


def real_data_outline(data: DictConfig, dev_sets: set[str], size: int,
                      cache: DataCache) -> tuple[DataOutline, list[str]]:
    """A real source indexed and checked as `run` checks it (its cached index read back when there
    is one; nothing written), with the exact split sizes of its manifest; its problems as lines."""
    info = DataOutline(data.source, str(data.root), None, 1, size)
    if not data.root or not Path(str(data.root)).expanduser().is_dir():
        return info, []  # named by the up-front checks (checks.data_problems)
    try:
        domain_data = DomainData(data, cache)
        source, manifest = domain_data.index()
        info.decode_seconds = domain_data.decoding_seconds()
        info.decode_each_read = cache_root(data.cache_dir) is None
        info.fingerprint = domain_data.fingerprint()
    except (ValueError, FileNotFoundError) as err:
        return info, [f"data ({data.domain}): {err}"]
    info.images, info.channels = len(source.labels), int(source.channels)
    info.positive_label = positive_label(source.task, source.label_names)
    return info, split_problems(info, manifest, str(data.domain), dev_sets, source)


def split_problems(info: DataOutline, manifest, domain: str, dev_sets: set[str], source=None) -> list[str]:
    """Fill `info.split_sizes`; the empty splits among the test set and those of `dev_sets`, and,
    when the `source` (its labels) is known, those of them that hold one class only."""
    problems = []
    for dev_set, stage in [(None, "test")] + [(d, s) for d in DEV_SETS for s in ("train", "val")]:
        wanted = dev_set is None or dev_set in dev_sets
        try:
            indices = dev_set_indices(manifest, dev_set or "d1", stage)
        except ValueError as err:
            if wanted:
                problems.append(f"data ({domain}): {err}")
            continue
        info.split_sizes[f"{dev_set}/{stage}" if dev_set else stage] = len(indices)
        problem = wanted and source is not None and one_class_problem(
            source.labels, indices, source.task, f"{dev_set} {stage}" if dev_set else "the shared test set")
        if problem:
            problems.append(f"data ({domain}): {problem}")
    return problems


def attack_steps(setting: dict) -> int:
    """Forward+backward passes per image the attack setting spends (iterative: `steps`)."""
    return int(setting.get("steps", 1))


def human_count(n: float) -> str:
    """1234567 -> '1.2M' (counts in the plan)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{int(n)}"


def human_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float) -> str:
    if math.isnan(s):
        return "?"
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if 0 < s < 1:
        return "< 1 s"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
