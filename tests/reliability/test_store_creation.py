"""A local SQLite store killed while it is created (issue 23): MLflow's own half-built file is replaced
when it holds no runs, one that holds runs is one line before any work, and medtransfer's creation
leaves either no store or a complete one whatever the instant of a SIGKILL."""
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.design.config import preset_path
from experiments.store.sqlite_store import ABSENT, BROKEN, COMPLETE, REPLACEABLE, schema_head, store_state
from experiments.store.tracking import setup_experiment

REPO = Path(__file__).resolve().parents[2]


def revision(path: Path) -> str | None:
    """The alembic revision written in a store file so far, None before there is one."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("select version_num from alembic_version").fetchone()[0]
    except (sqlite3.Error, TypeError):
        return None


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def half_built_by_mlflow(path: Path) -> str:
    """A store that plain MLflow was killed creating: SIGKILL once its migrations have started and
    before they reach the head revision. Returns the revision it stopped at."""
    process = python(f"from mlflow.tracking import MlflowClient; MlflowClient('sqlite:///{path}').search_experiments()")
    head, deadline = schema_head(), time.monotonic() + 120
    while (found := revision(path)) is None or found == head:
        assert process.poll() is None and time.monotonic() < deadline, "MLflow finished before it was caught"
        time.sleep(0.002)
    process.kill()
    process.wait()
    return revision(path)


def test_a_store_mlflow_was_killed_creating_is_replaced_before_use(tmp_path, capsys):
    path = tmp_path / "mlflow.db"
    stopped_at = half_built_by_mlflow(path)
    assert stopped_at != schema_head() and store_state(path)[0] == REPLACEABLE

    experiment_id = setup_experiment(f"sqlite:///{path}", "smoke")
    assert f"{path}: a half-built MLflow store holding no runs" in capsys.readouterr().err
    assert store_state(path)[0] == COMPLETE and revision(path) == schema_head()
    client = MlflowClient(f"sqlite:///{path}")
    run = client.create_run(experiment_id)
    assert client.get_run(run.info.run_id).info.experiment_id == experiment_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]


def test_an_incomplete_store_holding_runs_is_one_line_before_any_work(tmp_path, capsys):
    """A store with a run whose schema stopped short of the head (an interrupted `mlflow db upgrade`):
    never replaced; `run` stops with one line naming it and the fix, before any folder is made."""
    path = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.create_run(client.create_experiment("kept"))
    with sqlite3.connect(path) as db:
        db.execute("update alembic_version set version_num = 'a8c4a736bde6'")
    before = path.read_bytes()
    capsys.readouterr()  # MLflow's own log lines while it created the store

    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{path}",
                 f"output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and "holding 1 run whose" in err[0] and "mlflow db upgrade" in err[0]
    assert store_state(path)[0] == BROKEN and path.read_bytes() == before
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # MLflow processes SIGKILLed while they create a store: about 11 s here
def test_a_sigkill_during_creation_leaves_no_store_or_a_complete_one(tmp_path):
    """medtransfer's creation killed at three instants after its temporary file appears (three
    processes side by side, one store each): the final path is absent (never half-built), and the
    next set-up builds a complete store and removes the killed attempt's temporary file."""
    delays = (0.0, 0.3, 0.8)
    folders = [tmp_path / f"kill-{delay}" for delay in delays]
    processes = [python(f"from experiments.store.tracking import setup_experiment; "
                        f"setup_experiment('sqlite:///{folder / 'mlflow.db'}', 'x')") for folder in folders]
    deadline, killed_at = time.monotonic() + 120, {}
    while len(killed_at) < len(delays):
        for folder, delay, process in zip(folders, delays, processes):
            if folder in killed_at:
                continue
            assert process.poll() is None and time.monotonic() < deadline, f"{folder.name}: creation not caught"
            if folder.is_dir() and list(folder.glob("mlflow.db.*.tmp")):
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_at[folder] = store_state(folder / "mlflow.db")[0]
        time.sleep(0.002)

    for folder in folders:
        path = folder / "mlflow.db"
        assert killed_at[folder] in (ABSENT, COMPLETE), folder.name
        assert killed_at[folder] == COMPLETE or list(folder.glob("mlflow.db.*.tmp*"))
        setup_experiment(f"sqlite:///{path}", "x")
        assert store_state(path)[0] == COMPLETE
        assert not list(folder.glob("mlflow.db.*.tmp*"))
