"""The local executor: a study's work in this process, set group by set group in the scheduler's order.

For each set, the pairs the store holds are read back; for the others the set is crafted once and
each target evaluated and logged (`work.StudyWork`).
"""
from __future__ import annotations

import pandas as pd

from medcommon.console import stage_bar
from ..design.scheduler import QueryJob, SetGroup
from .queries import QUERY_COLUMNS, query_rows
from .work import StudyWork, group_rows


class LocalExecutor:
    """Does a `StudyWork`'s groups here and now (`rows`: their result rows, in order)."""

    def __init__(self, work: StudyWork):
        self.work = work

    def rows(self, groups: list[SetGroup]) -> list[dict]:
        with stage_bar(groups, "evaluating", unit="set") as bar:  # own line on errors
            return [row for group in bar for row in self.group_rows(group)]

    def query_rows(self, queries: list[QueryJob]) -> pd.DataFrame:
        """The query runs' rows (read back, or attacked and logged), in the scheduler's order."""
        if not queries:  # no stage, no line
            return pd.DataFrame(columns=QUERY_COLUMNS)
        with stage_bar(queries, "querying", unit="run") as bar:
            frames = [query_rows(self.work, job) for job in bar]
        return pd.concat(frames, ignore_index=True)

    def group_rows(self, group: SetGroup) -> list[dict]:
        rows, pending = self.work.stored(group)
        if pending:
            shared = self.work.set_numbers(group.set)
            rows.update({pair.key: self.work.evaluate(pair, shared) for pair in pending})
        return group_rows(group, rows)
