"""A local SQLite tracking store, created atomically and checked before use.

MLflow builds a new SQLite store by running its schema migrations one by one on the database file
itself, for several seconds; a process killed meanwhile leaves a half-built file that every later
client fails on. Here a new store is built in a temporary file beside its final path and renamed
into place only once its schema is complete, under a lock beside the database (two processes never
build it at once). A store found half-built is replaced when it holds no runs: it can only come from
an interrupted creation, and nothing in it can be lost. One that holds runs is never touched: it is
one line naming the file and what to do.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import uuid
from pathlib import Path

from filelock import FileLock

from medcommon.atomic import replaced

COMPLETE, ABSENT, REPLACEABLE, BROKEN = "complete", "absent", "replaceable", "broken"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local SQLite store URI, else None (a server, another database)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def store_lock(uri: str):
    """The lock of a local store's creation and experiment set-up (a no-op for other stores)."""
    path = sqlite_path(uri)
    return FileLock(str(path) + ".lock") if path is not None else contextlib.nullcontext()


def schema_head() -> str:
    """The schema revision this MLflow writes."""
    from mlflow.store.db.utils import _get_latest_schema_revision
    return _get_latest_schema_revision()


def _count(db: sqlite3.Connection, query: str) -> int:
    try:
        return db.execute(query).fetchone()[0]
    except sqlite3.DatabaseError:  # the table is missing
        return 0


def store_state(path: Path) -> tuple[str, str]:
    """(state, one-line reason) of the store file at `path`: ABSENT, COMPLETE (MLflow's current schema),
    REPLACEABLE (empty or half-built, no runs) or BROKEN (not an MLflow store, or an incomplete or
    other schema holding runs). Reads only."""
    if not path.exists():
        return ABSENT, ""
    if path.stat().st_size == 0:
        return REPLACEABLE, "an empty file"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        return BROKEN, f"cannot be opened as an SQLite database ({err})"
    try:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        revision = db.execute("select version_num from alembic_version").fetchone() \
            if "alembic_version" in tables else None
        runs = _count(db, "select count(*) from runs")
        experiments = _count(db, "select count(*) from experiments where experiment_id != 0")
    except sqlite3.DatabaseError as err:
        return BROKEN, f"is not an SQLite database ({err})"
    finally:
        db.close()
    revision = revision[0] if revision else None
    head = schema_head()
    if revision == head and _all_tables(path):
        return COMPLETE, ""
    found = f"schema revision {revision or 'none'}, {len(tables)} tables, this MLflow's schema is {head}"
    if runs == 0 and experiments == 0:
        return REPLACEABLE, f"a half-built MLflow store holding no runs ({found})"
    return BROKEN, (f"an MLflow store holding {runs} run{'s' * (runs != 1)} whose schema is not this MLflow's ({found}); back it up, "
                    f"then run `mlflow db upgrade sqlite:///{path}`, or name another store with tracking.uri=")


def _all_tables(path: Path) -> bool:
    """Every table of MLflow's schema is in the database (its revision alone can be ahead of them)."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        return _all_tables_exist(engine)
    finally:
        engine.dispose()


def store_problem(uri: str) -> str | None:
    """One line when the local store at `uri` exists and cannot be used or replaced, else None."""
    path = sqlite_path(uri)
    if path is None:
        return None
    state, reason = store_state(path)
    return f"tracking.uri: {path}: {reason}" if state == BROKEN else None


def ensure_store(uri: str, artifact_root: str | None) -> None:
    """Make sure the local store at `uri` is complete: build it if absent, replace it when half-built
    without runs, raise ValueError (one line) when it cannot be used. Call under `store_lock(uri)`."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"tracking.uri: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    state, reason = store_state(path)
    if state == COMPLETE:
        return
    if state == BROKEN:
        raise ValueError(f"tracking.uri: {path}: {reason}")
    if state == REPLACEABLE:
        print(f"medtransfer: {path}: {reason}; replaced by a new store", file=sys.stderr, flush=True)
    _build(path, artifact_root)


def _build(path: Path, artifact_root: str | None) -> None:
    """Create MLflow's schema in a temporary file beside `path`, then rename it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f"{path.name}.*.tmp*"):  # left by a killed process (under the lock)
        stale.unlink()
    with replaced(path, temporary=path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")) as temporary:
        uri = f"sqlite:///{temporary}"
        SqlAlchemyStore(uri, artifact_root or str(path.parent / "artifacts"))
        SqlAlchemyStore._engine_map.pop(uri).dispose()
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
