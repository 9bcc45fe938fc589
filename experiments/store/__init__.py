"""Store: everything medtransfer keeps in MLflow.

Owns the tracking store's location and checks, the one run store every run goes through
(`run_store`: `RunStore`, `StudyContext`) and the formats of the files it reads back
(`artifact_formats`), the study's parent, pair and query runs (`runs`), trained models' runs
(`model_store`), the runs `search_pairs` reads (`study_search`), dataset inputs, logged and
registered models, and `medtransfer ui`. The only package that uses MLflow's tracking API.
May import `design` and the library packages.
"""
from .runs import StudyRuns
from .tracking import setup_experiment

__all__ = ["StudyRuns", "setup_experiment"]
