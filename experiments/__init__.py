"""Studies: config schema and presets, the transfer-grid runner, MLflow tracking, the CLI.

`load_config` and `run_study` are imported when first used, so that the command line starts (and
answers a Ctrl-C or SIGTERM with one line) before torch and Lightning are loaded."""
from importlib import import_module

__all__ = ["load_config", "run_study"]
_HOMES = {"load_config": ".design.config", "run_study": ".study"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
