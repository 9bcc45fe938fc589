"""Two identical `run` commands started together (issue 23), on a fresh store and on one that exists,
with one output folder: both exit 0, each model trained once, each set crafted once, each pair
evaluated once, and the store holds no duplicate runs.

Each process runs the CLI's `main` under an audit hook that records every file renamed into the
adversarial-set cache (a set is promoted from its temporary file exactly when it was crafted), so
"crafted once" is observed, not inferred."""
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from experiments.design.config import preset_path
from experiments.store.tracking import setup_experiment

from .test_faults import ENV, default_sigint, sqlite_uri, study_args

REPO = Path(__file__).resolve().parents[2]
RECORDING_CLI = """
import sys
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event == "os.rename" and "adversarial_sets" in str(args[1]) and str(args[1]).endswith(".set"):
        log.write(str(args[1]) + "\\n")
sys.addaudithook(hook)
from experiments.cli import main
sys.exit(main(sys.argv[2:]))
"""


def all_runs(uri: str, kind: str) -> list:
    """Every run of a kind in the smoke experiment, deleted ones included."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("smoke").experiment_id
    return client.search_runs([experiment_id], f"tags.kind = '{kind}'", run_view_type=ViewType.ALL,
                              max_results=1000)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["fresh", "existing"])
def test_two_identical_commands_at_once_do_each_piece_of_work_once(store, tmp_path):
    uri, output_dir = sqlite_uri(tmp_path / "store"), tmp_path / "out"
    if store == "existing":
        setup_experiment(uri, "smoke")
    args = ["run", "--config", str(preset_path("smoke")), *study_args(uri, output_dir)]
    logs = [tmp_path / f"stderr{i}.txt" for i in range(2)]
    renames = [tmp_path / f"sets{i}.txt" for i in range(2)]
    processes = []
    for log, crafted in zip(logs, renames):
        with open(log, "w") as stderr:
            processes.append(subprocess.Popen([sys.executable, "-c", RECORDING_CLI, str(crafted), *args],
                                              cwd=REPO, env={**ENV, "PYTHONPATH": str(REPO)},
                                              stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=default_sigint))
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()

    models, pairs, studies = (all_runs(uri, kind) for kind in ("model", "pair", "study"))
    assert sorted(r.info.run_name for r in models) == ["a", "b"]  # trained once each: no deleted second run
    assert all(r.info.status == "FINISHED" and r.info.lifecycle_stage == "active" for r in models + pairs)
    assert len(pairs) == 8 and len({r.data.tags["config_hash"] for r in pairs}) == 8  # evaluated once each
    assert [r.info.status for r in studies] == ["FINISHED"]
    assert {r.data.tags["mlflow.parentRunId"] for r in pairs} == {studies[0].info.run_id}

    crafted = [line for path in renames if path.exists() for line in path.read_text().splitlines()]
    stored = sorted(str(p) for p in (output_dir / "adversarial_sets").glob("*.set"))
    assert len(stored) == 4 and sorted(crafted) == stored  # each set renamed into place once, by one process
    assert not list((output_dir / "adversarial_sets").glob("*.tmp"))
    assert len(list(output_dir.glob("smoke/*/report/results.csv"))) == 1  # one variant, one report folder
