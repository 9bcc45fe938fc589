"""Execution: where and how a study's work runs.

Owns the executors (`local`: this process; `ray`: a pool of Ray actors), the per-piece work they
share (`work.StudyWork`: train or read back a model, craft a set, evaluate or read back a pair),
query attacks (`queries`), training, prediction through Lightning (`predicting`), the device group
of a multi-device run (`devices`, `follower`) and the measurements of a pair (`evaluation`). May import `design`,
`store`, `report` and the library packages; never `preflight` or the study.
"""
from __future__ import annotations

from importlib import import_module
from typing import Protocol

import pandas as pd

from ..design.scheduler import QueryJob, SetGroup
from .devices import DeviceGroup
from .work import StudyWork, WorkSpec, read_data

# `executor` name -> where its class is (imported when chosen: Ray is an optional dependency)
EXECUTOR_HOMES = {"local": "experiments.execution.local:LocalExecutor",
                  "ray": "experiments.execution.ray_tasks:RayExecutor"}


class Executor(Protocol):
    """Does a study's work for its set groups; their result rows, in group and target order."""

    def __init__(self, work: StudyWork): ...

    def rows(self, groups: list[SetGroup]) -> list[dict]: ...

    def query_rows(self, queries: list[QueryJob]) -> pd.DataFrame: ...


def executor(name: str, work: StudyWork) -> Executor:
    """The executor `name` (config key `executor`) over `work`."""
    module, _, cls = EXECUTOR_HOMES[name].partition(":")
    return getattr(import_module(module), cls)(work)


__all__ = ["DeviceGroup", "EXECUTOR_HOMES", "Executor", "StudyWork", "WorkSpec", "executor", "read_data"]
