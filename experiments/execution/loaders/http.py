"""`http`: a scoring endpoint (`execution.endpoint.Endpoint`, MLflow's /invocations JSON protocol, its
answers cached on disk under `cache`); nothing is loaded; a target only (no gradients)."""
from __future__ import annotations

from pathlib import Path

from ..endpoint import Endpoint, ScoreCache
from .common import Loaded, NumpyCore

FORMAT = "http"


def load(name: str, settings: dict, tracking_uri: str | None, cache: Path | None) -> Loaded:
    endpoint = Endpoint(name, settings, ScoreCache(cache) if cache is not None else None)
    return Loaded(NumpyCore(endpoint), False, endpoint=endpoint)
