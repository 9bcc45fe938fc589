"""SIGTERM (what SLURM, Kubernetes and systemd send before they kill) is a clean stop, as Ctrl-C is
(issue 23): during a fit, a craft and an evaluation, the CLI exits 143 within seconds with one line,
the study run (and the training run in progress) end KILLED, no temporary file is left, and a rerun
finishes the work with one FINISHED run per piece of it."""
import signal
import time

import pytest
from filelock import FileLock, Timeout
from mlflow.tracking import MlflowClient

from experiments import load_config, run_study

from .test_faults import CONFIG, SLOW_STAGES, runs, sqlite_uri, start, study_args, wait_for

STOPPED = "medtransfer: stopped by SIGTERM; finished work is kept, run the same command again to resume"
# pair evaluations that last about a second each (the bootstrap dominates), long enough to hit
SLOW_EVALUATION = [*SLOW_STAGES, "bootstrap_resamples=40000"]


def evaluation_in_progress(uri, output_dir):
    """A pair lock held by the study for at least two polls 50 ms apart (an evaluation, not the brief
    look-up that also takes it) while no set is being written, or None."""
    for _ in range(2):
        held = [path for path in (output_dir / "locks").glob("pair-*.lock") if is_held(path)]
        if not held or list((output_dir / "adversarial_sets").glob("*.tmp")):
            return None
        time.sleep(0.05)
    return held[0]


def is_held(path) -> bool:
    try:
        FileLock(str(path)).acquire(timeout=0).lock.release()
    except Timeout:
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["training", "crafting", "evaluation"])
def test_sigterm_stops_cleanly_and_the_rerun_finishes(stage, tmp_path, monkeypatch):
    from . import test_faults
    monkeypatch.setitem(test_faults.STAGES, "evaluation", evaluation_in_progress)
    uri, output_dir = sqlite_uri(tmp_path), tmp_path / "out"
    args = study_args(uri, output_dir, *(SLOW_EVALUATION if stage == "evaluation" else SLOW_STAGES))
    process = start(args, tmp_path / "stderr.txt")
    caught = wait_for(process, stage, uri, output_dir)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert time.monotonic() - sent < 20, "SIGTERM took more than 20 s to stop the study"
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == STOPPED

    assert [r.info.status for r in runs(uri, "study")] == ["KILLED"]
    if stage == "training":
        assert MlflowClient(uri).get_run(caught.info.run_id).info.status == "KILLED"
    assert not list((output_dir / "adversarial_sets").glob("*.tmp"))
    assert all(r.info.status == "FINISHED" for r in runs(uri, "pair"))  # none half-logged

    table = run_study(load_config(CONFIG, args)).table
    assert len(table) == 8 and table["run_id"].nunique() == 8
    models, pairs = runs(uri, "model"), runs(uri, "pair")
    assert sorted(r.info.run_name for r in models) == ["a", "b"]
    assert all(r.info.status == "FINISHED" for r in models + pairs)
    assert sorted(r.info.run_id for r in pairs) == sorted(table["run_id"])
    assert [r.info.status for r in runs(uri, "study")] == ["FINISHED"]

