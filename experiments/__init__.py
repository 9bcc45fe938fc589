"""Studies: config schema and presets, the transfer-grid runner, MLflow tracking, the CLI."""
from .design.config import load_config
from .study import run_study

__all__ = ["load_config", "run_study"]
