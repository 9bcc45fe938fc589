"""Every check a study can make before it starts, all problems at once, one line each.

Run before any data is generated or read in bulk and before any store is touched: ImageNet weight
files, `checkpoint:` files, data roots, the tracking server, devices and the free disk space the
caches will need, and the Ray cluster of the `ray` executor.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from attacks.cache import stored_bytes
from datamodules.real_cache import DataCache
from datamodules.sources import SOURCE_SPECS, domain_problem
from lightning_modules import ARCHITECTURES
from lightning_modules.pretrained import load_state_dict_file

from ..design.resources import device_count
from ..design.model_kinds import kind_of
from ..design.zoo import expand_zoo
from ..execution.ray_cluster import ray_problems
from ..store.run_store import StudyContext
from ..store.sqlite_store import sqlite_path, store_problem
from ..store.tracking import artifact_root, check_tracking_uri
from .outline import DomainWork, human_bytes, outline
from .weights import weight_problems

ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


class StudyProblems(ValueError):
    """Problems found before a study starts; str() is one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def require_ready(cfg: DictConfig, cache: DataCache | None = None) -> list[DomainWork]:
    """The study's outline (its data read through `cache`), or StudyProblems naming everything that
    would stop it."""
    work = outline(cfg, cache)
    problems = study_problems(cfg, work)
    if problems:
        raise StudyProblems(problems)
    return work


def study_problems(cfg: DictConfig, work: list[DomainWork]) -> list[str]:
    problems = weight_problems(cfg) + checkpoint_problems(cfg)
    for domain in work:
        problems += data_problems(domain.cfg.data) + domain.problems
    problems += tracking_problems(cfg) + device_problems(cfg) + disk_problems(cfg, work) + ray_problems(cfg)
    return list(dict.fromkeys(problems))


def checkpoint_problems(cfg: DictConfig) -> list[str]:
    """Each `checkpoint:` init readable as a state dict of plain tensors (pickled code is refused)."""
    problems = []
    for model in expand_zoo(cfg):
        init = kind_of(model).trained_init or ""  # an ensemble's members are checked themselves
        if init.startswith("checkpoint:"):
            try:
                load_state_dict_file(init.removeprefix("checkpoint:"))
            except (ValueError, FileNotFoundError) as err:
                problems.append(f"models.{model['name']}.init: {err}")
    return problems


def data_problems(data: DictConfig) -> list[str]:
    """Domain and source known and matching; a real source's root and index file present."""
    problem = domain_problem(data.domain, data.source)
    if problem:
        return [problem]
    if data.source == "synthetic":
        return []
    if not data.root:
        return [f"data.root ({data.domain}): required for source {data.source}"]
    root = Path(str(data.root)).expanduser()
    if not root.is_dir():
        return [f"{root}: data root not found (data.root, {data.domain})"]
    table = SOURCE_SPECS[data.source].table
    index = table(data.get) if table else None
    if index and not (root / index).is_file():
        return [f"{root / index}: index file not found (data.root, {data.domain})"]
    return []


def tracking_problems(cfg: DictConfig) -> list[str]:
    """Credentials not in the URI; an http(s) server answers; a local store's folder can be written."""
    uri = StudyContext.of(cfg).tracking_uri
    try:
        check_tracking_uri(uri)
    except ValueError as err:
        return [str(err)]
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not os.access(existing_ancestor(folder), os.W_OK):
            return [f"tracking.uri: {folder} cannot be written"]
    problem = store_problem(uri)  # a half-built store without runs is replaced, not a problem
    return [problem] if problem else []


def device_problems(cfg: DictConfig) -> list[str]:
    """The trainer's accelerator and device count, and `crafting.device` (its kind is checked when the
    config is read), exist on this machine."""
    problems, gpus = crafting_device_problems(str(cfg.crafting.device)), torch.cuda.device_count()
    accelerator, devices = str(cfg.trainer.accelerator), cfg.trainer.devices
    if accelerator not in ACCELERATORS:
        problems.append(f"trainer.accelerator: unknown {accelerator!r}; valid: {', '.join(ACCELERATORS)}")
    elif accelerator in ("gpu", "cuda"):
        wanted = device_count(devices, gpus)
        if gpus == 0:
            problems.append(f"trainer.accelerator: {accelerator}, but this machine has no CUDA GPU")
        elif wanted > gpus:
            problems.append(f"trainer.devices: {devices} GPUs asked for, this machine has {gpus}")
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        problems.append("trainer.accelerator: mps, but MPS is not available on this machine")
    return problems


def crafting_device_problems(device: str) -> list[str]:
    """`crafting.device` (auto, cpu, mps, cuda or cuda:N) names a device this machine has."""
    kind, _, index = device.partition(":")
    if device == "mps" and not torch.backends.mps.is_available():
        return ["crafting.device: mps, but MPS is not available on this machine"]
    gpus = torch.cuda.device_count()
    if kind == "cuda" and int(index or 0) >= gpus:
        return [f"crafting.device: {device}, but this machine has {gpus or 'no'} CUDA GPU{'s' * (gpus != 1)}"]
    return []


def disk_needs(cfg: DictConfig, work: list[DomainWork]) -> list[tuple[Path, int, str]]:
    """(folder, bytes, what) the study will write: generated data sets not cached yet, adversarial
    sets (`attacks.cache.stored_bytes` of the test set's values), the report (tables, figures,
    manifest) and, for a local store, its database (schema and runs) and run artifacts (model
    checkpoints, per-pair predictions, the report's copy). Upper estimates, from a smoke study's files."""
    needs = []
    for domain in work:
        data = domain.data
        if data.cache_file is not None and not data.cache_file.is_file():
            needs.append((data.cache_file.parent, data.images * data.image_bytes,
                          f"generated {domain.cfg.data.domain} set"))
        test = data.split_sizes.get("test", 0)
        sets = domain.sets
        set_bytes = sum(stored_bytes(test * data.image_bytes, bool(job.setting.get("quantize"))) for job in sets)
        needs.append((Path(domain.cfg.output_dir) / "adversarial_sets", set_bytes,
                      f"{len(sets)} {domain.cfg.data.domain} adversarial sets"))
        artifacts = artifact_root(StudyContext.of(cfg).tracking_uri)
        if artifacts is not None:
            weights = sum(parameter_count(domain.zoo_entry(job).arch, data.channels) * 4
                          for job in domain.models)
            predictions = len(domain.pairs) * test * PREDICTION_ROW_BYTES
            needs.append((Path(artifacts.removeprefix("file://")), weights + predictions + report_bytes(domain),
                          f"{len(domain.models)} {domain.cfg.data.domain} model checkpoints, "
                          f"{len(domain.pairs)} pair predictions and the report's copy"))
        needs.append((Path(domain.cfg.output_dir) / domain.cfg.name, report_bytes(domain),  # its variants' reports
                      f"{domain.cfg.data.domain} report"))
    database = sqlite_path(StudyContext.of(cfg).tracking_uri)
    if database is not None:
        runs = sum(len(domain.models) + len(domain.pairs) + 1 for domain in work)
        needs.append((database.parent, (0 if database.is_file() else STORE_BYTES) + runs * RUN_BYTES,
                      f"tracking store ({runs} runs)"))
    return needs


STORE_BYTES, RUN_BYTES = 1_200_000, 32_000  # an empty MLflow 3 SQLite store; params, tags, metrics of a run
PREDICTION_ROW_BYTES, FIGURE_BYTES, TABLES_BYTES = 200, 120_000, 100_000  # the smoke study: 40, 51 000, 30 000


def report_bytes(domain: DomainWork) -> int:
    """A domain's report: a heatmap per attack setting, epsilon curves per attack, the example grid,
    the tables and the split manifest (one row per image)."""
    settings = {(job.setting["name"], job.setting["eps"]) for job in domain.sets}
    figures = len(settings) + len({name for name, _ in settings}) + 1
    return figures * FIGURE_BYTES + TABLES_BYTES + (domain.data.images or 0) * 40


def disk_problems(cfg: DictConfig, work: list[DomainWork]) -> list[str]:
    """One line per folder the study cannot write (read-only, not permitted) and per file system that
    lacks the space the study's store, artifacts, report and caches need."""
    by_device: dict[int, list] = {}
    problems = []
    for folder, size, what in disk_needs(cfg, work):
        anchor = existing_ancestor(folder)
        if not os.access(anchor, os.W_OK) and not what.startswith("tracking store"):  # that: tracking_problems
            problems.append(f"disk: {folder} cannot be written (read-only or not permitted): {what}")
        by_device.setdefault(os.stat(anchor).st_dev, []).append((anchor, folder, size, what))
    for needs in by_device.values():
        total, free = sum(n[2] for n in needs), shutil.disk_usage(needs[0][0]).free
        if total > free:
            parts = "; ".join(f"{what} {human_bytes(size)} in {folder}" for _, folder, size, what in needs)
            problems.append(f"disk: {human_bytes(free)} free on the file system of {needs[0][0]}, the study needs "
                            f"about {human_bytes(total)} there: {parts}")
    return problems


def parameter_count(arch: str, channels: int) -> int:
    """Parameters of a registered architecture (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        model = ARCHITECTURES[arch].build(1, False)
    return sum(p.numel() for p in model.parameters()) + (3 * channels if channels != 3 else 0)


def existing_ancestor(path: Path) -> Path:
    path = Path(path).expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path
