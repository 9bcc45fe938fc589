"""The store queried from Python: a study's pair runs as the table `run_study` returns
(`search_pairs`). The columns and the MLflow params, metrics and tags they come from are listed in
docs/architecture.md ("MLflow contract")."""
from __future__ import annotations

import pandas as pd

from attacks.registry import THREAT_DEFAULTS

from .design.locations import default_tracking_uri
from .execution.work import stored_row
from .report.findings import AT_CHANCE_TAG
from .report.outputs import with_factors
from .store.study_search import pair_runs, study_runs
from .store.tracking import flag
from .study import TABLE_COLUMNS

TEXT_KEYS = ("name", "arch", "init", "dev_set", "mode")  # zoo-entry params that stay strings


def search_pairs(tracking_uri: str | None = None, study: str = "", **filters) -> pd.DataFrame:
    """The pair runs a study used (its own and those it read back from other studies), one row each,
    with the columns of `run_study`'s table; `study`: a study run's id, or a study's name (its newest
    study run; a study of several domains: the newest run of each `<name>-<domain>`). `filters`: a
    column and a value (`surrogate="a"`, `eps=0.03`) or a list of values (`attack=["fgsm", "ifgsm"]`).
    A study without a finished report has no `target_at_chance` column, as in `run_study`."""
    uri = tracking_uri or default_tracking_uri()
    tables = []
    for study_run in study_runs(uri, study):
        runs = pair_runs(uri, study_run)
        rows = [row_of(run) for run in runs]
        table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        zoo = {}
        for run in runs:
            for role in ("surrogate", "target"):
                entry = zoo_entry(run.data.params, role)
                zoo[entry["name"]] = entry
        table = with_factors(table, zoo, study_run.data.tags.get("domain", study_run.data.params.get("data.domain")))
        if any(AT_CHANCE_TAG in run.data.tags for run in runs):
            table[AT_CHANCE_TAG] = [run.data.tags.get(AT_CHANCE_TAG) == flag(True) for run in runs]
        tables.append(table)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    for column, wanted in filters.items():
        if column not in table.columns:
            raise ValueError(f"search_pairs: unknown column {column!r}; valid: {', '.join(table.columns)}")
        values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        table = table[table[column].isin(values)]
    return table.reset_index(drop=True)


def row_of(run) -> dict:
    """A pair run's result row, as the study's executor builds it (`work.group_rows`)."""
    params = run.data.params
    return {"seed": int(params["seed"]), "surrogate": params["surrogate.name"], "target": params["target.name"],
            "attack": params["attack.name"], "eps": float(params["attack.eps"]),
            "norm": params.get("attack.norm", THREAT_DEFAULTS["norm"]),
            "attack_target": params.get("attack.target", str(THREAT_DEFAULTS["target"])), **stored_row(run)}


def zoo_entry(params: dict, role: str) -> dict:
    """A pair run's surrogate or target zoo entry, rebuilt from its `<role>.*` params (`entry_params`)."""
    entry: dict = {}
    for key, value in params.items():
        if not key.startswith(f"{role}."):
            continue
        outer, _, inner = key.removeprefix(f"{role}.").partition(".")
        if inner:
            entry.setdefault(outer, {})[inner] = param_value(value)
        else:
            entry[outer] = value if outer in TEXT_KEYS else param_value(value)
    if "ensemble" in entry:
        entry["ensemble"] = str(entry["ensemble"]).split(",")
    return entry


def param_value(text: str):
    """A param's value as the number or boolean it was logged from (MLflow keeps `str(value)`)."""
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
