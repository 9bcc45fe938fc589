"""Where a study's results go: the default tracking store, and the folders a study makes (checked
when the config is read)."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

STORE_DIR = Path("mlruns")
SHORT_KEY = 8  # hex digits of a study key naming its variant's report folder and study run
CONFIG_DIR = Path(__file__).parents[1] / "configs"  # the preset studies


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an SQLite database in ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def report_dir(cfg: DictConfig, study_key: str) -> Path:
    """The report folder of one variant of study `cfg.name` (its `study_key`):
    `<output_dir>/<name>/<first SHORT_KEY hex digits of the key>/report`, so variants of one name
    (a sweep) never share or empty each other's folders."""
    return Path(str(cfg.output_dir)) / cfg.name / study_key[:SHORT_KEY] / "report"


def study_run_name(cfg: DictConfig, study_key: str) -> str:
    """The MLflow run name of one variant of study `cfg.name`: `<name>-<short study key>`."""
    return f"{cfg.name}-{study_key[:SHORT_KEY]}"


def location_problem(cfg: DictConfig) -> str | None:
    """A folder the study would make whose nearest existing ancestor is a file, as one line."""
    uri = cfg.tracking.uri or default_tracking_uri()
    folders = {"output_dir": Path(str(cfg.output_dir))}
    if uri.startswith("sqlite:///"):
        folders["tracking.uri"] = Path(uri.removeprefix("sqlite:///")).parent
    if cfg.data.cache_dir and str(cfg.data.cache_dir).lower() != "none":
        folders["data.cache_dir"] = Path(str(cfg.data.cache_dir))
    for key, folder in folders.items():
        path = folder.expanduser().absolute()
        while not path.exists() and path != path.parent:
            path = path.parent
        if not path.is_dir():
            return f"{key}: {path} is a file, so the folder {folder} cannot be made"
    return None
