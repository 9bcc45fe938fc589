"""A reader study of one study's stored adversarial sets: found, planned, served, reported.

`ReaderStudy(cfg, ...)` checks that the study has stored sets and a parent run in its existing
store (a store is never created here), reads the test
images the plan shows, and keeps the answers under
`<output_dir>/<name>/readers/<readers_hash>/` (one folder per reader-study identity: the study,
its sets and the plan's settings). `finish()` writes the report and logs the `kind=readers` run."""
from __future__ import annotations

import math
import urllib.parse
from pathlib import Path

from omegaconf import DictConfig

from attacks import AdversarialSetCache
from datamodules.real_cache import DataCache

from ..design.config import ConfigError, domain_config
from ..design.identity import digest, study_key
from ..execution import read_data
from ..execution.evaluation import load_test_set
from ..preflight.facts import study_facts
from ..store.run_store import RunStore, StudyContext
from ..store.runs import study_run_id
from ..store.sqlite_store import COMPLETE, sqlite_path, store_state
from ..store.tracking import check_tracking_uri, ui_address, ui_link
from .answers import AnswerStore
from .reader_run import log_reader_run
from .plan import ReaderPlan
from .report import write_report
from .session import MAX_NEW_READERS, ReaderSessions, load_secret
from .stimuli import Stimuli, stored_sets

SHOWN_SIDE = 480  # default zoom: the largest integer factor that keeps an image within this many pixels


def domain_study(cfg: DictConfig, domain: str | None) -> DictConfig:
    """The (sub-)study whose sets are shown: the config itself, or one entry of its `domains`."""
    if not cfg.domains:
        if domain not in (None, cfg.data.domain):
            raise ConfigError(f"--domain: {domain!r}: the study has one domain, {cfg.data.domain}")
        return cfg
    if domain not in cfg.domains:
        raise ConfigError(f"--domain: {'required' if domain is None else repr(domain) + ' is not'} "
                          f"one of the study's domains ({', '.join(cfg.domains)})")
    return domain_config(cfg, domain)


def study_store(uri: str, name: str) -> RunStore:
    """The run store of the study's experiment in the store at `uri`, which must exist already:
    nothing is created (a mistyped `tracking.uri` is one line, not a new store)."""
    path, parts = sqlite_path(uri), urllib.parse.urlsplit(uri)
    missing = (store_state(path)[0] != COMPLETE if path is not None
               else parts.scheme in ("", "file") and not Path(parts.path).exists())
    if missing:
        raise FileNotFoundError(f"tracking.uri: {uri}: no MLflow store of the study there (run the study "
                                "first, or give the store it ran with)")
    check_tracking_uri(uri)
    found = RunStore.existing(uri, name)
    if found is None:
        raise FileNotFoundError(f"tracking.uri: {uri}: no experiment {name!r} (run the study first: "
                                "medtransfer run --config ...)")
    return found


class ReaderStudy:
    def __init__(self, cfg: DictConfig, domain: str | None = None, trials_per_set: int = 20,
                 repeats: int | None = None, seed: int | None = None, zoom: int | None = None,
                 readers: frozenset[str] | None = None, max_new: int = MAX_NEW_READERS):
        cfg = domain_study(cfg, domain)
        context = StudyContext.of(cfg)
        self.cfg, self.uri = cfg, context.tracking_uri
        sets_dir = Path(cfg.output_dir) / "adversarial_sets"
        if not sets_dir.is_dir():
            raise FileNotFoundError(f"output_dir: {sets_dir}: no adversarial sets (run the study first: "
                                    "medtransfer run --config ... with the same overrides)")
        cache, data = AdversarialSetCache(sets_dir), DataCache()
        self.facts = study_facts(cfg, data)  # the code version and data content the study's identities hold
        sets = stored_sets(cfg, cache, self.facts)
        if not sets:
            raise FileNotFoundError(f"output_dir: {sets_dir} holds none of this study's adversarial sets (run the "
                                    "study first, with this code version: medtransfer run --config ...)")
        self.study_hash = study_key(cfg, self.facts)
        self.runs = study_store(self.uri, context.experiment)
        self.experiment_id = self.runs.experiment_id
        self.parent_id = study_run_id(self.runs, self.study_hash)
        if self.parent_id is None:
            raise FileNotFoundError(f"tracking.uri: {self.uri}: no run of study {cfg.name} with this config and "
                                    "code version (run it first: medtransfer run --config ...)")
        test = load_test_set(read_data(cfg, data).datamodule("d1"))
        per_set = min(trials_per_set, len(test.sample_ids))
        repeats = math.ceil(0.1 * per_set * len(sets)) if repeats is None else repeats
        seed = int(cfg.seed) if seed is None else seed
        self.plan = ReaderPlan(sets, len(test.sample_ids), seed, trials_per_set, repeats)
        self.params = {"plan.seed": seed, "plan.trials_per_set": self.plan.per_set, "plan.repeats": repeats,
                       "plan.trials": self.plan.length, "plan.sets": len(sets)}
        self.readers_hash = digest({"study": self.study_hash, "sets": [s.key for s in sets], **self.params})
        self.folder = Path(cfg.output_dir) / cfg.name / "readers" / self.readers_hash
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = AnswerStore(self.folder / "answers.jsonl")
        zoom = zoom or max(1, SHOWN_SIDE // int(cfg.data.image_size))
        self.sessions = ReaderSessions(self.plan, Stimuli(self.plan, test, cache), self.store,
                                       load_secret(self.folder / "secret"), zoom, readers, max_new)

    def finish(self) -> tuple[str, str]:
        """Write the report and log the reader-study run; (summary text, the run's UI link)."""
        answers = self.store.frame()
        text, analysis = write_report(answers, self.folder)
        run_id = log_reader_run(self.runs, self.parent_id, self.study_hash, self.readers_hash,
                                self.params, self.folder, analysis, len(answers), self.facts.code)
        return text, ui_link(ui_address(self.uri), self.experiment_id, run_id)
