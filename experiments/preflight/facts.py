"""The study's facts (`design.facts.StudyFacts`), found where it starts: the code version (git), the
content of its split files and of its real data, each read once per study and handed down."""
from __future__ import annotations

import subprocess
from pathlib import Path

from omegaconf import DictConfig

from datamodules.build import data_fingerprint
from datamodules.real_cache import DataCache
from datamodules.sources import SOURCE_SPECS
from datamodules.split_files import splits_sha256

from ..design.facts import StudyFacts
from ..design.identity import data_settings, digest


def code_version() -> str:
    """The git commit of the code, with '+dirty' when the work tree has changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def splits_content(splits: str) -> str:
    """`sha256:<hex>` of the split file or the authors' folder at `splits`; the path itself while it
    cannot be read (the up-front checks stop such a study with the reason)."""
    try:
        return "sha256:" + splits_sha256(Path(splits).expanduser().resolve())
    except OSError:
        return splits


def study_facts(cfg: DictConfig, cache: DataCache | None = None, code: str | None = None) -> StudyFacts:
    """The facts of a (domain) study config: `code` (default: `code_version()`), its split files' and
    its real data's content (read through `cache`, the study's `DataCache`)."""
    splits = str(cfg.data.splits or "")
    spec = SOURCE_SPECS.get(cfg.data.source)
    content = data_fingerprint(cfg.data, cache) if spec is not None and spec.real else ""
    return StudyFacts(code_version() if code is None else code, digest(data_settings(cfg)),
                      splits_content(splits) if splits else "", content)
