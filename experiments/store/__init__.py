"""Store: everything medtransfer keeps in MLflow.

Owns the tracking store's location and checks, the study's parent and pair runs (`runs`), trained
models' runs (`model_store`), dataset inputs, logged and registered models, and `medtransfer ui`.
May import `design` and the library packages.
"""
from .runs import StudyRuns
from .tracking import setup_experiment

__all__ = ["StudyRuns", "setup_experiment"]
