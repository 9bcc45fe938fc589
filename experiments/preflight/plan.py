"""`medtransfer plan`: what a study will do, what is already done, what it will cost, what stops it.

Reads the tracking store and the caches (never writes them, never creates a folder) and times one
training step and one forward pass per architecture and image size on this machine.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from attacks.cache import set_path
from datamodules import DomainData
from datamodules.real_cache import DataCache
from datamodules.synthetic import GENERATORS
from lightning_modules import tasks
from lightning_modules.model import build_classifier

from ..design.config import checked_config
from ..design.model_kinds import kind_of
from ..design.scheduler import ModelJob, PairJob, QueryJob, SetJob
from ..store.run_store import RunStore, StudyContext
from .checks import study_problems
from .externals import probe_externals
from .outline import DomainWork, attack_steps, human_bytes, human_count, human_seconds, outline

TIMING_SECONDS, WARM_UP, TIMED = 2.0, 3, 3  # a timed step's length at most; untimed and timed steps
# Seconds each piece of work costs beyond its image passes (Trainer and MLflow runs, checkpoints,
# predictions files; per study: the store, the checks, reading the data, the report), measured on
# this project's idle 2-core machine (`benchmarks/bench_plan.py`, README "Performance"); the start of
# the process (imports; once per study) is `process_age`.
OVERHEAD = {"model": 1.0, "set": 0.3, "pair": 0.1, "study": 8.0}


@dataclass
class Remaining:
    """One domain's work: totals and what is left (None: the store could not be read)."""

    models: int
    sets: int
    pairs: int
    models_left: int | None = None
    sets_left: int | None = None
    pairs_left: int | None = None
    passes: dict[str, float] = field(default_factory=dict)  # stage -> image passes still to run
    seconds: float = 0.0
    queries: int = 0  # query runs (kind=query)
    queries_left: int | None = None


@dataclass
class StudyPlan:
    """The plan `plan_study(cfg)` returns; `text` is what `medtransfer plan` prints."""

    text: str
    problems: list[str]
    domains: dict[str, Remaining]
    seconds: float


def remaining(domain: DomainWork, store_ok: bool, timings: Timings) -> Remaining:
    """Totals of a domain's work and, from the store and the set cache, how much is left (work is
    found by the identities the scheduler gave its jobs; `store_ok`: the store may be read)."""
    cfg = domain.cfg
    context = StudyContext.of(cfg)
    models_done: set[str] = set()
    pairs_done: set[str] = set()
    queries_done: set[str] = set()
    store = RunStore.existing(context.tracking_uri, context.experiment) if store_ok else None
    if store is not None:
        models_done, pairs_done = store.finished_keys("model"), store.finished_keys("pair")
        if domain.queries:
            queries_done = store.finished_keys("query")
    sets_dir = Path(cfg.output_dir) / "adversarial_sets"
    models_left = [job for job in domain.models if job.key not in models_done]
    pending_pairs = [pair for pair in domain.pairs if pair.key not in pairs_done]
    pending_queries = [job for job in domain.queries if job.key not in queries_done]
    pending_sets = dict.fromkeys([pair.set for pair in pending_pairs] + [q.start for q in pending_queries if q.start])
    sets_left = [job for job in pending_sets if not set_path(sets_dir, job.key).is_file()]
    work = Remaining(len(domain.models), len(domain.sets), len(domain.pairs), len(models_left), len(sets_left),
                     len(pending_pairs), queries=len(domain.queries), queries_left=len(pending_queries))
    work.passes, work.seconds = cost(domain, models_left, sets_left, pending_pairs, pending_queries, timings)
    return work


def cost(domain: DomainWork, models: list[ModelJob], sets: list[SetJob], pairs: list[PairJob],
         queries: list[QueryJob], timings: Timings) -> tuple[dict[str, float], float]:
    """Image passes per stage (forward+backward for training and crafting, forward otherwise) and
    the seconds they take at the speeds measured here; training counts every epoch, a query attack
    every image's whole budget (upper bounds)."""
    cfg, splits = domain.cfg, domain.data.split_sizes
    test, epochs = splits.get("test", 0), int(cfg.train.max_epochs)
    passes = {"train": 0.0, "validate": 0.0, "craft": 0.0, "evaluate": 0.0}
    seconds = 0.0
    for job in models:
        m, attack = domain.zoo_entry(job), domain.scheduler.kinds[job.name].training_attack
        train, val = epochs * splits.get(f"{m.dev_set}/train", 0), epochs * splits.get(f"{m.dev_set}/val", 0)
        if attack is not None:  # each step first crafts its batch; validation also attacks
            steps = attack_steps(attack)
            train, val = train * (1 + steps), val * (1 + steps)
        passes["train"] += train
        passes["validate"] += val
        step, forward = speed(domain, m.arch, timings)  # a trained model: never external
        seconds += train * step + val * forward
    for job in sets:
        n = test * attack_steps(job.setting)
        members = domain.scheduler.members(job.surrogate)  # an ensemble's members all run each step
        passes["craft"] += n * len(members)
        seconds += n * sum(model_speed(domain, domain.zoo_entry(member), timings)[0] for member in members)
    if models or sets or pairs:
        seconds += (OVERHEAD["model"] * len(models) + OVERHEAD["set"] * len(sets) + OVERHEAD["pair"] * len(pairs)
                    + OVERHEAD["study"] + decoding(domain, passes["train"] + passes["validate"], len(sets), pairs))
    clean = dict.fromkeys(pair.target for pair in pairs)  # each target scores the clean test set once
    clean.update(dict.fromkeys(query.target for query in queries))
    evaluations = [(2 * test, pair.target) for pair in pairs] + [(test, target) for target in clean]
    evaluations += [(test * query.setting["max_queries"], query.target) for query in queries]
    for n, target in evaluations:
        passes["evaluate"] += n
        seconds += n * model_speed(domain, domain.zoo_entry(target), timings)[1]
    return passes, seconds


def decoding(domain: DomainWork, training_reads: float, sets: int, pairs: list[PairJob]) -> float:
    """Seconds of decoding a real source's images: once, into the cache; without a cache, at every
    read (each epoch's images, the test split once per set crafted and per target and pair scored)."""
    data = domain.data
    if not data.decode_each_read or not data.images:
        return data.decode_seconds
    test_reads = data.split_sizes.get("test", 0) * (sets + len(pairs) + len({pair.target for pair in pairs}))
    return data.decode_seconds / data.images * (training_reads + test_reads)


def process_age() -> float:
    """Seconds this process took to get here (imports, config, checks), which a study run pays too;
    read from /proc (0 where there is none)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Timings:
    """What one plan measured, so that each thing is timed once: the seconds per image of each
    architecture at each layout (`speed`) and of each external model as its probe timed it."""
    speeds: dict[tuple, tuple[float, float]] = field(default_factory=dict)
    external: dict[tuple[str, str], float] = field(default_factory=dict)  # (domain, external model) -> s/image


def model_speed(domain: DomainWork, entry, timings: Timings) -> tuple[float, float]:
    """`speed` of a zoo entry: an external model's forward pass as its probe timed it (forward+backward
    counted as three of them); a trained model's by its architecture."""
    if kind_of(entry).probed:
        forward = timings.external.get((domain.cfg.data.domain, entry.name), 0.0)
        return 3 * forward, forward
    return speed(domain, entry.arch, timings)


def external_problems(domain: DomainWork, timings: Timings, cache: DataCache) -> list[str]:
    """Each external model of the domain loaded and probed as `run` probes it (on the layout the
    config gives; real data indexed through `cache`, not decoded); its problems, one line each; the
    probe's speed is kept in `timings` for `model_speed`."""
    cfg = domain.cfg
    if not any(kind_of(model).probed for model in cfg.models):
        return []
    if cfg.data.source == "synthetic":
        _, label_names, task = GENERATORS[cfg.data.domain]
    else:
        try:
            source, _ = DomainData(cfg.data, cache).index()
        except (ValueError, FileNotFoundError, OSError):
            return []  # the data's own problem is listed
        label_names, task = source.label_names, source.task
    layout = {"task": task, "label_names": list(label_names), "channels": domain.data.channels,
              "size": domain.data.size}
    found = probe_externals(cfg, layout, domain.facts)
    for name, probed in found.items():
        timings.external[(cfg.data.domain, name)] = probed.seconds
    return [probed.problem for probed in found.values() if probed.problem]


def speed(domain: DomainWork, arch: str, timings: Timings) -> tuple[float, float]:
    """Seconds per image of one training step (forward+backward) and of one forward pass of `arch`
    at the domain's image size and batch size, measured once per plan (`timings`) on the device the
    study trains on."""
    data, device = domain.data, timing_device(domain.cfg)
    key = (arch, data.size, data.channels, device, int(domain.cfg.data.batch_size))
    if key not in timings.speeds:
        timings.speeds[key] = measure(arch, data.size, data.channels, device, int(domain.cfg.data.batch_size))
    return timings.speeds[key]


def timing_device(cfg: DictConfig) -> str:
    gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    return "cuda" if gpu else "cpu"


def measure(arch: str, size: int, channels: int, device: str, batch_size: int) -> tuple[float, float]:
    """(training-step, forward) seconds per image at the study's batch size, or at as many images as
    one step takes in `TIMING_SECONDS` when that is fewer, at least 2 (the per-image cost falls with
    the batch: a small batch overestimates): warm-up steps, then the fastest of `TIMED` steps of each (the
    task's head is a few outputs of a linear layer; its cost is left out)."""
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
        torch.manual_seed(0)
        model = build_classifier(arch, "random", "binary", 1, channels).to(device)

    def timed(run, images) -> float:
        best = math.inf
        for _ in range(TIMED):
            _sync(device)
            start = time.perf_counter()
            run(images)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        return best

    def step(images) -> None:
        model.zero_grad()
        tasks.loss("binary", model(images), torch.zeros(len(images), dtype=torch.long, device=device)).backward()

    def forward(images) -> None:
        with torch.inference_mode():
            model(images)

    probe = torch.rand(2, channels, size, size, device=device)
    model.train()
    for _ in range(WARM_UP):  # the process's first passes set up kernels and threads: several times slower
        step(probe)
    # at least 2: a training step of batch-normalised layers needs more than one image
    batch = max(2, min(batch_size, int(TIMING_SECONDS / (timed(step, probe) / len(probe)))))
    images = torch.rand(batch, channels, size, size, device=device)
    step(images)
    timings = [timed(step, images) / batch]
    model.eval()
    forward(images)
    timings.append(timed(forward, images) / batch)
    return timings[0], timings[1]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def study_plan(cfg: DictConfig) -> StudyPlan:
    """Work, progress, cost and problems of a study; writes nothing."""
    started = process_age()  # before any timing below
    cfg = checked_config(cfg)
    cache, timings = DataCache(), Timings()
    work = outline(cfg, cache)
    # `run` probes external models once the up-front checks pass; the plan lists both at once
    problems = list(dict.fromkeys(study_problems(cfg, work)
                                  + [line for d in work for line in external_problems(d, timings, cache)]))
    store_ok = not any(p.startswith("tracking.uri") for p in problems)
    domains = {d.cfg.data.domain: remaining(d, store_ok, timings) for d in work}
    if not store_ok:
        for left in domains.values():
            left.models_left = left.sets_left = left.pairs_left = None
    seconds = sum(r.seconds for r in domains.values())
    if any(r.seconds for r in domains.values()):
        seconds += started
    return StudyPlan(render(cfg, work, domains, problems, seconds, timings), problems, domains, seconds)


def render(cfg: DictConfig, work: list[DomainWork], domains: dict[str, Remaining], problems: list[str],
           seconds: float, timings: Timings) -> str:
    seeds = sorted({job.seed for d in work for job in d.models})
    lines = [f"Study {cfg.name}: {len(work)} domain{'s' * (len(work) > 1)}, seed{'s' * (len(seeds) > 1)} "
             f"{', '.join(map(str, seeds))}; tracking store {StudyContext.of(cfg).tracking_uri}"]
    for d in work:
        left = domains[d.cfg.data.domain]
        lines.append(f"\n{d.cfg.data.domain}: {data_line(d)}")

        def done(total: int, todo: int | None, word: str) -> str:
            return f"{total:6d}  ({'?' if todo is None else total - todo} {word})"

        lines.append(f"  models to train     {done(left.models, left.models_left, 'in the store')}")
        lines.append(f"  sets to craft       {done(left.sets, left.sets_left, 'cached or not needed')}")
        lines.append(f"  pairs to evaluate   {done(left.pairs, left.pairs_left, 'done')}")
        if left.queries:
            lines.append(f"  query runs          {done(left.queries, left.queries_left, 'done')}")
        lines += endpoint_lines(d)
        p = left.passes
        lines.append(f"  compute left        training <= {human_count(p['train'])} image forward+backward passes "
                     f"({d.cfg.train.max_epochs} epochs) + {human_count(p['validate'])} forward; crafting "
                     f"{human_count(p['craft'])} forward+backward; evaluation {human_count(p['evaluate'])} forward")
        lines.append(f"  time left here      about {human_seconds(left.seconds)} ({speed_note(d, timings)}; with each "
                     f"model's, set's and pair's runs, files and the report)")
    lines.append(f"\nTotal: {sum(r.models for r in domains.values())} models, "
                 f"{sum(r.sets for r in domains.values())} adversarial sets, "
                 f"{sum(r.pairs for r in domains.values())} pairs; time left on this machine about "
                 f"{human_seconds(seconds)}, start of the process included (training counted at max_epochs; early "
                 "stopping shortens it)")
    lines.append(f"\nProblems ({len(problems)}):" if problems else "\nProblems: none")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def endpoint_queries(d: DomainWork) -> dict[str, tuple[int, int]]:
    """Per http target: (scoring queries, query-attack queries at most) the whole study sends it: the
    clean test set once and each pair's adversarial and control images; test images x max_queries
    per query run (the probe's few batches come on top)."""
    test, counts = d.data.split_sizes.get("test", 0), {}
    for name in [name for name, kind in d.scheduler.kinds.items() if kind.endpoint]:
        pairs = sum(pair.target.name == name for pair in d.pairs)
        runs = [query for query in d.queries if query.target.name == name]
        if pairs or runs:
            counts[name] = ((1 + 2 * pairs) * test, sum(test * query.setting["max_queries"] for query in runs))
    return counts


def endpoint_lines(d: DomainWork) -> list[str]:
    lines = []
    for name, (scoring, attacks) in endpoint_queries(d).items():
        lines.append(f"  queries to {name:<9} at most {scoring + attacks} images scored by "
                     f"{d.scheduler.kinds[name].endpoint}: {scoring} scoring the test set and the pairs' sets, "
                     f"at most {attacks} by query attacks (test images x max_queries per run), plus the probe")
    return lines


def data_line(d: DomainWork) -> str:
    data, cfg = d.data, d.cfg.data
    shape = f"{data.channels}x{data.size}x{data.size}"
    if data.images is None:
        return f"{data.source} at {data.root or '(no data.root)'}, not indexed (see Problems), read at {shape}"
    splits = ", ".join(f"{dev} {data.split_sizes.get(dev + '/train', 0)}+{data.split_sizes.get(dev + '/val', 0)}"
                       for dev in ("d1", "d2", "d2/2", "d1/10"))
    head = (f"synthetic, {data.images} images ({cfg.num_patients} patients x {cfg.images_per_patient})"
            if data.source == "synthetic" else f"{data.source} at {data.root}, {data.images} images")
    line = f"{head} at {shape}; test {data.split_sizes.get('test', 0)}, train+val {splits}"
    if data.positive_label:
        line += f"; binary, positive label (class 1, what the AUCs score): {data.positive_label}"
    if data.decode_each_read:
        line += (f"; no cache (data.cache_dir=none): every read decodes, about "
                 f"{human_seconds(data.decode_seconds)} a pass over them (timed here)")
    elif data.source != "synthetic":
        line += (f"; decoding them at {data.size} px: about {human_seconds(data.decode_seconds)} (timed here)"
                 if data.decode_seconds else f"; decoded at {data.size} px in the cache")
    if data.fingerprint:
        line += f"; content {data.fingerprint[:23]} (index files by sha256, image files by size and time)"
    if data.source == "synthetic":
        if data.cache_file is None:
            line += f"; generated in memory ({human_bytes(data.images * data.image_bytes)}, data.cache_dir=none)"
        else:
            state = "cached" if data.cache_file.is_file() else "to generate"
            line += f"; {state}: {data.cache_file} ({human_bytes(data.images * data.image_bytes)})"
    return line


def speed_note(d: DomainWork, timings: Timings) -> str:
    device = timing_device(d.cfg)
    archs = sorted({d.zoo_entry(job).arch for job in d.models})
    measured = [f"{a} {1000 * speed(d, a, timings)[0]:.0f}/{1000 * speed(d, a, timings)[1]:.0f} ms" for a in archs]
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    return (f"measured on {device}{threads}, per image train step/forward at {d.data.size} px: "
            f"{', '.join(measured)}")
