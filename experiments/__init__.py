"""Studies: config schema and presets, the transfer-grid runner, MLflow tracking, the CLI.

From Python: `run_study(cfg) -> StudyResult` runs a study, `plan_study(cfg) -> StudyPlan` says what
it would do; `load_config` reads a config. These names are imported when first used, so that the
command line starts (and answers a Ctrl-C or SIGTERM with one line) before torch and Lightning are
loaded; `dir()`, `help()` and type checkers see them all the same."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .design.config import load_config
    from .preflight.plan import StudyPlan
    from .study import plan_study, run_study
    from .study_result import StudyResult

__all__ = ["StudyPlan", "StudyResult", "load_config", "plan_study", "run_study"]
_HOMES = {"load_config": ".design.config", "run_study": ".study", "plan_study": ".study",
          "StudyResult": ".study_result", "StudyPlan": ".preflight.plan"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
