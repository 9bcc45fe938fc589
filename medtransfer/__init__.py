"""medtransfer's Python interface, importable whatever the working folder holds.

The library's top-level packages have generic names (`attacks`, `datamodules`, `experiments`,
`lightning_modules`, and `medcommon` below them all), so a user's own `attacks.py` (or folder) earlier on `sys.path`, such as the
working folder of a script, would be imported in their place. Importing `medtransfer` first checks,
without importing anything, that each of them is, or will be, imported from the library's folder
(beside this package) and refuses in one line naming the other file when not; then the names below
are imported from the library when first used:

    from medtransfer import load_config, run_study, search_pairs
"""
from __future__ import annotations

import importlib.util
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attacks.craft import craft
    from datamodules.build import build_datamodule
    from experiments.design.config import ConfigError, load_config
    from experiments.preflight.plan import StudyPlan
    from experiments.report.metrics import auc
    from experiments.search import search_pairs
    from experiments.store.model_store import load_model
    from experiments.study import plan_study, run_study
    from experiments.study_result import StudyResult
    from lightning_modules.tasks import scores

LIBRARY = Path(__file__).resolve().parent.parent  # where the library's packages are installed
PACKAGES = ("attacks", "datamodules", "experiments", "lightning_modules", "medcommon")
_HOMES = {"load_config": "experiments.design.config", "ConfigError": "experiments.design.config",
          "run_study": "experiments.study", "plan_study": "experiments.study",
          "StudyResult": "experiments.study_result", "StudyPlan": "experiments.preflight.plan", "search_pairs": "experiments.search",
          "load_model": "experiments.store.model_store", "build_datamodule": "datamodules.build",
          "craft": "attacks.craft", "scores": "lightning_modules.tasks", "auc": "experiments.report.metrics"}
__all__ = sorted(_HOMES)


class ShadowedPackage(ImportError):
    """One of the library's packages is, or would be, imported from somewhere else."""


def _found_at(name: str) -> Path | None:
    """The folder or file `import name` uses now (already imported) or would use, None if none."""
    module = sys.modules.get(name)
    spec = module.__spec__ if module is not None and getattr(module, "__spec__", None) else None
    if spec is None and module is None:
        spec = importlib.util.find_spec(name)
    if spec is None:
        return Path(getattr(module, "__file__", "") or "?") if module is not None else None
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        return Path(spec.origin).resolve()
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]).resolve() if locations else None


def check_packages() -> None:
    """Refuse (`ShadowedPackage`, one line) when a library package is or would be imported from
    another file or folder than the library's."""
    for name in PACKAGES:
        expected = LIBRARY / name / "__init__.py"
        found = _found_at(name)
        if found != expected:
            state = "is imported" if name in sys.modules else "would be imported"
            raise ShadowedPackage(f"medtransfer: {found or 'nothing'} {state} as `{name}` instead of the library's "
                                  f"{expected.parent}; rename or move it (or start Python in another folder)")


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


check_packages()
