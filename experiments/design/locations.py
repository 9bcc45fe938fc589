"""Where a study's results go: the default tracking store, and the folders a study makes (checked
when the config is read)."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

STORE_DIR = Path("mlruns")
CONFIG_DIR = Path(__file__).parents[1] / "configs"  # the preset studies


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an SQLite database in ./mlruns."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


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
